/* ctl.c - `veer ctl` (see ctl.h): argument parsing, one HTTP/1.1 request per
 * call over a blocking socket with a deadline, and the output of each
 * command. The commands are a table: a new verb (the canary ones) is one
 * entry and one function. */
#include "ctl.h"

#include <cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netdb.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CTL_DEFAULT_ADMIN "127.0.0.1:9901"
#define CTL_DEFAULT_TIMEOUT_MS 10000
#define CTL_MAX_RESPONSE (16u << 20) /* a status of thousands of routes is far below */
#define CTL_MAX_TOKEN 4096
#define CTL_MAX_WEIGHTS 64

typedef struct ctl_s {
    char host[256];
    char port[8];
    char *token; /* NULL: none */
    int timeout_ms;
    /* weights options */
    long long if_generation; /* -1: not given */
    bool force;
    bool watch; /* canary status: redraw every second until a terminal phase */
} ctl_t;

typedef struct ctl_resp_s {
    int status;
    char *body; /* NUL-terminated */
    size_t len;
    cJSON *json; /* NULL when the body is not JSON */
} ctl_resp_t;

static void resp_clear(ctl_resp_t *r)
{
    free(r->body);
    cJSON_Delete(r->json);
    memset(r, 0, sizeof(*r));
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: veer ctl [--admin HOST:PORT] [--token-file FILE] [--timeout SECONDS] COMMAND [ARGS]\n"
            "\n"
            "commands:\n"
            "  status                              routes with weights, success rate, P99 and canary phase\n"
            "                                      endpoints failing health checks, with why\n"
            "  weights ROUTE CLUSTER=WEIGHT...     set a route's weights, e.g. weights embed blue=80 canary=20\n"
            "          [--if-generation N]         only if the weights generation is still N (else 409)\n"
            "          [--force]                   even while a canary run owns the route (aborts the run)\n"
            "  canary ROUTE start [KEY=VALUE...]   start a canary run; KEY=VALUE override the route's canary block,\n"
            "                                      e.g. canary embed start canary=green interval=10s step_weight=20\n"
            "  canary ROUTE status [--watch]       the run: phase, weight, checks, last analysis; --watch redraws\n"
            "                                      every second until it succeeds (exit 0) or is rolled back (exit 1)\n"
            "  canary ROUTE pause|resume|promote|abort   operator overrides of the run\n"
            "  reload                              reload the config file (the errors are printed if it is invalid)\n"
            "  drain                               stop accepting, finish in-flight requests, exit\n"
            "\n"
            "--admin defaults to $VEER_ADMIN, else %s (http://HOST:PORT is accepted too).\n"
            "--token-file: a file holding the admin bearer token (admin.token_file of the config).\n"
            "Exit status: 0 done, 1 refused by veer (its message is printed), 2 bad usage, 3 admin API unreachable.\n",
            CTL_DEFAULT_ADMIN);
}

/* ---------------------------------------------------------------- setup */

/* "HOST:PORT", "[V6]:PORT" or "http://HOST:PORT[/]". */
static int parse_admin(ctl_t *c, const char *text)
{
    const char *s = text;
    if (strncasecmp(s, "https://", 8) == 0) {
        fprintf(stderr, "veer ctl: --admin %s: the admin API speaks plain HTTP on loopback; https is not supported\n",
                text);
        return -1;
    }
    if (strncasecmp(s, "http://", 7) == 0)
        s += 7;
    size_t n = strlen(s);
    while (n > 0 && s[n - 1] == '/')
        n--;
    const char *host = s, *colon;
    size_t host_len;
    if (n > 0 && s[0] == '[') {
        const char *close = memchr(s, ']', n);
        if (close == NULL || close + 1 >= s + n || close[1] != ':')
            goto bad;
        host = s + 1;
        host_len = (size_t)(close - host);
        colon = close + 1;
    } else {
        colon = NULL;
        for (size_t i = 0; i < n; i++)
            if (s[i] == ':')
                colon = s + i;
        if (colon == NULL)
            goto bad;
        host_len = (size_t)(colon - s);
    }
    size_t port_len = (size_t)(s + n - colon - 1);
    if (host_len == 0 || host_len >= sizeof(c->host) || port_len == 0 || port_len >= sizeof(c->port))
        goto bad;
    for (size_t i = 0; i < port_len; i++)
        if (!isdigit((unsigned char)colon[1 + i]))
            goto bad;
    memcpy(c->host, host, host_len);
    c->host[host_len] = '\0';
    memcpy(c->port, colon + 1, port_len);
    c->port[port_len] = '\0';
    long port = strtol(c->port, NULL, 10);
    if (port < 1 || port > 65535)
        goto bad;
    return 0;
bad:
    fprintf(stderr, "veer ctl: invalid admin address \"%s\" (expected HOST:PORT, e.g. %s)\n", text, CTL_DEFAULT_ADMIN);
    return -1;
}

static int read_token(ctl_t *c, const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "veer ctl: --token-file %s: %s\n", path, strerror(errno));
        return -1;
    }
    char buf[CTL_MAX_TOKEN + 1];
    size_t len = 0;
    ssize_t n;
    while (len < sizeof(buf) && (n = read(fd, buf + len, sizeof(buf) - len)) != 0) {
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            fprintf(stderr, "veer ctl: --token-file %s: %s\n", path, strerror(errno));
            close(fd);
            return -1;
        }
        len += (size_t)n;
    }
    close(fd);
    if (len > CTL_MAX_TOKEN) {
        fprintf(stderr, "veer ctl: --token-file %s: longer than %d bytes\n", path, CTL_MAX_TOKEN);
        return -1;
    }
    size_t start = 0;
    while (start < len && isspace((unsigned char)buf[start]))
        start++;
    while (len > start && isspace((unsigned char)buf[len - 1]))
        len--;
    for (size_t i = start; i < len; i++) {
        if ((unsigned char)buf[i] < 0x21 || (unsigned char)buf[i] > 0x7e) {
            fprintf(stderr, "veer ctl: --token-file %s: the token must be one line of visible characters\n", path);
            return -1;
        }
    }
    if (len == start) {
        fprintf(stderr, "veer ctl: --token-file %s: empty\n", path);
        return -1;
    }
    c->token = strndup(buf + start, len - start);
    explicit_bzero(buf, sizeof(buf));
    if (c->token == NULL) {
        fprintf(stderr, "veer ctl: out of memory\n");
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- HTTP */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int wait_fd(int fd, short events, int64_t deadline)
{
    for (;;) {
        int64_t left = deadline - now_ms();
        if (left <= 0)
            return -1;
        struct pollfd p = {.fd = fd, .events = events};
        int rc = poll(&p, 1, (int)left);
        if (rc > 0)
            return 0;
        if (rc == 0)
            return -1;
        if (errno != EINTR)
            return -1;
    }
}

static void unreachable(const ctl_t *c, const char *why)
{
    fprintf(stderr,
            "veer ctl: cannot reach the admin API at %s:%s: %s\n"
            "(is veer running? the address comes from --admin or $VEER_ADMIN, default %s)\n",
            c->host, c->port, why, CTL_DEFAULT_ADMIN);
}

static int connect_admin(const ctl_t *c, int64_t deadline)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    int rc = getaddrinfo(c->host, c->port, &hints, &res);
    if (rc != 0) {
        unreachable(c, gai_strerror(rc));
        return -1;
    }
    int fd = -1, last_err = 0;
    for (struct addrinfo *ai = res; ai != NULL && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            last_err = errno;
            continue;
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
            break;
        int err = errno;
        if (err == EINPROGRESS) {
            socklen_t len = sizeof(err);
            if (wait_fd(fd, POLLOUT, deadline) < 0)
                err = ETIMEDOUT;
            else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
                err = errno;
            if (err == 0)
                break;
        }
        last_err = err;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0)
        unreachable(c, strerror(last_err ? last_err : ECONNREFUSED));
    return fd;
}

static int send_all(int fd, const char *p, size_t n, int64_t deadline)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
        } else if (w < 0 && errno == EINTR) {
            continue;
        } else if (w < 0 && errno == EAGAIN) {
            if (wait_fd(fd, POLLOUT, deadline) < 0)
                return -1;
        } else {
            return -1;
        }
    }
    return 0;
}

/* Read until the peer closes (we asked for Connection: close). */
static int read_all(int fd, char **out, size_t *outlen, int64_t deadline)
{
    size_t cap = 16384, len = 0;
    char *buf = malloc(cap);
    if (buf == NULL)
        return -1;
    for (;;) {
        if (len + 4096 > cap) {
            if (cap >= CTL_MAX_RESPONSE) {
                free(buf);
                errno = EFBIG;
                return -1;
            }
            char *g = realloc(buf, cap * 2);
            if (g == NULL) {
                free(buf);
                return -1;
            }
            buf = g;
            cap *= 2;
        }
        ssize_t n = recv(fd, buf + len, cap - len - 1, 0);
        if (n > 0) {
            len += (size_t)n;
        } else if (n == 0) {
            break;
        } else if (errno == EINTR) {
            continue;
        } else if (errno == EAGAIN) {
            if (wait_fd(fd, POLLIN, deadline) < 0) {
                free(buf);
                errno = ETIMEDOUT;
                return -1;
            }
        } else {
            free(buf);
            return -1;
        }
    }
    buf[len] = '\0';
    *out = buf;
    *outlen = len;
    return 0;
}

/* In place: a chunked body becomes its data. -1 when malformed. */
static int dechunk(char *body, size_t len, size_t *outlen)
{
    size_t in = 0, out = 0;
    for (;;) {
        char *end;
        errno = 0;
        unsigned long long size = strtoull(body + in, &end, 16);
        if (end == body + in || errno != 0)
            return -1;
        char *eol = strstr(end, "\r\n");
        if (eol == NULL)
            return -1;
        in = (size_t)(eol - body) + 2;
        if (size == 0)
            break;
        if (size > len - in || len - in - size < 2)
            return -1;
        memmove(body + out, body + in, size);
        out += size;
        in += size + 2;
    }
    body[out] = '\0';
    *outlen = out;
    return 0;
}

/* Split a raw response into status and body. -1: not HTTP. */
static int parse_response(char *raw, size_t len, ctl_resp_t *r)
{
    int minor, status;
    if (sscanf(raw, "HTTP/1.%d %3d", &minor, &status) != 2 || status < 100 || status > 999)
        return -1;
    char *head_end = strstr(raw, "\r\n\r\n");
    if (head_end == NULL)
        return -1;
    *head_end = '\0';
    char *body = head_end + 4;
    size_t body_len = len - (size_t)(body - raw);
    bool chunked = false;
    long long content_length = -1;
    for (char *line = strstr(raw, "\r\n"); line != NULL; line = strstr(line, "\r\n")) {
        line += 2;
        if (strncasecmp(line, "transfer-encoding:", 18) == 0 && strcasestr(line, "chunked") != NULL)
            chunked = true;
        else if (strncasecmp(line, "content-length:", 15) == 0)
            content_length = strtoll(line + 15, NULL, 10);
    }
    if (chunked) {
        if (dechunk(body, body_len, &body_len) < 0)
            return -1;
    } else if (content_length >= 0 && (size_t)content_length < body_len) {
        body_len = (size_t)content_length;
    }
    r->status = status;
    r->len = body_len;
    r->body = malloc(body_len + 1);
    if (r->body == NULL)
        return -1;
    memcpy(r->body, body, body_len);
    r->body[body_len] = '\0';
    r->json = cJSON_ParseWithLength(r->body, r->len);
    return 0;
}

/* One call. Returns 0 with r filled (any status), or an exit code after
 * printing why there is no answer. */
static int call(const ctl_t *c, const char *method, const char *path, const char *body, ctl_resp_t *r)
{
    memset(r, 0, sizeof(*r));
    int64_t deadline = now_ms() + c->timeout_ms;
    int fd = connect_admin(c, deadline);
    if (fd < 0)
        return VEER_CTL_EUNREACHABLE;
    size_t body_len = body != NULL ? strlen(body) : 0;
    bool v6 = strchr(c->host, ':') != NULL;
    size_t cap = strlen(method) + strlen(path) + strlen(c->host) + (c->token ? strlen(c->token) : 0) + 256;
    char *req = malloc(cap + body_len);
    if (req == NULL) {
        close(fd);
        fprintf(stderr, "veer ctl: out of memory\n");
        return VEER_CTL_EREFUSED;
    }
    int n = snprintf(req, cap,
                     "%s %s HTTP/1.1\r\nHost: %s%s%s:%s\r\nUser-Agent: veer-ctl/%s\r\nAccept: application/json\r\n"
                     "Connection: close\r\nContent-Length: %zu\r\n%s%s%s%s\r\n",
                     method, path, v6 ? "[" : "", c->host, v6 ? "]" : "", c->port, VEER_VERSION, body_len,
                     body_len ? "Content-Type: application/json\r\n" : "", c->token ? "Authorization: Bearer " : "",
                     c->token ? c->token : "", c->token ? "\r\n" : "");
    if (n < 0 || (size_t)n >= cap) { /* cap leaves 256 bytes for the fixed text: cannot happen */
        free(req);
        close(fd);
        fprintf(stderr, "veer ctl: cannot build the request\n");
        return VEER_CTL_EREFUSED;
    }
    if (body_len > 0)
        memcpy(req + n, body, body_len);
    char *raw = NULL;
    size_t raw_len = 0;
    int rc = send_all(fd, req, (size_t)n + body_len, deadline);
    explicit_bzero(req, (size_t)n);
    free(req);
    if (rc < 0 || read_all(fd, &raw, &raw_len, deadline) < 0) {
        int err = errno;
        close(fd);
        char why[160];
        snprintf(why, sizeof(why), "%s %s: %s", method, path,
                 err == ETIMEDOUT || err == EAGAIN ? "no answer in time (--timeout)" : strerror(err));
        unreachable(c, why);
        return VEER_CTL_EUNREACHABLE;
    }
    close(fd);
    rc = parse_response(raw, raw_len, r);
    free(raw);
    if (rc < 0) {
        resp_clear(r);
        fprintf(stderr, "veer ctl: %s:%s did not answer %s %s with HTTP (is it veer's admin address?)\n", c->host,
                c->port, method, path);
        return VEER_CTL_EREFUSED;
    }
    return 0;
}

/* The server's message for a refused call: its JSON "error" (and for an
 * invalid config, each of "errors"), else the raw body. */
static int refused(const char *what, const ctl_resp_t *r)
{
    const cJSON *error = cJSON_GetObjectItemCaseSensitive(r->json, "error");
    if (cJSON_IsString(error))
        fprintf(stderr, "veer ctl: %s: %d %s\n", what, r->status, error->valuestring);
    else
        fprintf(stderr, "veer ctl: %s: %d %.*s\n", what, r->status, (int)(r->len > 512 ? 512 : r->len),
                r->body != NULL ? r->body : "");
    const cJSON *errors = cJSON_GetObjectItemCaseSensitive(r->json, "errors");
    const cJSON *item;
    cJSON_ArrayForEach(item, errors)
        if (cJSON_IsString(item))
            fprintf(stderr, "  %s\n", item->valuestring);
    return VEER_CTL_EREFUSED;
}

/* A 2xx with a JSON object, or the exit code after saying what is wrong. */
static int expect_ok(const char *what, int rc, const ctl_resp_t *r)
{
    if (rc != 0)
        return rc;
    if (r->status < 200 || r->status > 299)
        return refused(what, r);
    if (!cJSON_IsObject(r->json)) {
        fprintf(stderr, "veer ctl: %s: %d with a body that is not a JSON object\n", what, r->status);
        return VEER_CTL_EREFUSED;
    }
    return 0;
}

/* ---------------------------------------------------------------- status */

static const cJSON *field(const cJSON *o, const char *key)
{
    return cJSON_GetObjectItemCaseSensitive(o, key);
}

static bool name_is(const cJSON *o, const char *k1, const char *k2, const char *name)
{
    const cJSON *v = field(o, k1);
    if (!cJSON_IsString(v))
        v = field(o, k2);
    return cJSON_IsString(v) && strcmp(v->valuestring, name) == 0;
}

/* An entry of an array (by its "name"/alt key) or of an object (by key). */
static const cJSON *member(const cJSON *container, const char *alt_key, const char *name)
{
    if (cJSON_IsObject(container))
        return field(container, name);
    const cJSON *item;
    cJSON_ArrayForEach(item, container)
        if (cJSON_IsObject(item) && name_is(item, "name", alt_key, name))
            return item;
    return NULL;
}

/* A route x cluster's numbers in a stats document: routes[ROUTE].clusters[
 * CLUSTER] (arrays by name or objects by key), or a flat list of objects
 * with "route" and "cluster" under "series"/"stats"; the "window" part when
 * there is one. */
static const cJSON *series_of(const cJSON *doc, const char *route, const char *cluster)
{
    const cJSON *found = NULL;
    const cJSON *r = member(field(doc, "routes"), "route", route);
    if (r != NULL)
        found = member(field(r, "clusters"), "cluster", cluster);
    static const char *const flat[] = {"series", "stats"};
    for (size_t k = 0; found == NULL && k < sizeof(flat) / sizeof(flat[0]); k++) {
        const cJSON *item;
        cJSON_ArrayForEach(item, field(doc, flat[k]))
            if (name_is(item, "route", "route", route) && name_is(item, "cluster", "cluster", cluster))
                found = item;
    }
    if (found == NULL)
        return NULL;
    const cJSON *window = field(found, "window");
    return cJSON_IsObject(window) ? window : found;
}

static bool number(const cJSON *o, const char *key, double *out)
{
    const cJSON *v = field(o, key);
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        return false;
    *out = v->valuedouble;
    return true;
}

static void format_success(const cJSON *s, char *out, size_t n)
{
    double v;
    if (number(s, "success_rate", &v))
        snprintf(out, n, "%.2f%%", v);
    else if (number(s, "success_ratio", &v))
        snprintf(out, n, "%.2f%%", v * 100);
    else
        snprintf(out, n, "-");
}

static void format_p99(const cJSON *s, char *out, size_t n)
{
    double ms;
    const cJSON *latency = field(s, "latency");
    if (number(s, "p99_us", &ms) || number(latency, "p99_us", &ms))
        ms /= 1000;
    else if (number(s, "p99_ms", &ms) || number(latency, "p99_ms", &ms))
        ;
    else if (number(s, "p99_seconds", &ms) || number(s, "p99", &ms) || number(latency, "p99", &ms))
        ms *= 1000;
    else {
        snprintf(out, n, "-");
        return;
    }
    if (ms < 1)
        snprintf(out, n, "%.0fus", ms * 1000);
    else if (ms < 1000)
        snprintf(out, n, "%.1fms", ms);
    else
        snprintf(out, n, "%.2fs", ms / 1000);
}

static void format_rate(const cJSON *s, char *out, size_t n)
{
    double v;
    if (number(s, "rps", &v) || number(s, "rate", &v) || number(s, "requests_per_second", &v))
        snprintf(out, n, "%.1f/s", v);
    else
        snprintf(out, n, "-");
}

static void format_canary(const cJSON *route, char *out, size_t n)
{
    const cJSON *canary = field(route, "canary");
    const cJSON *phase = field(canary, "phase");
    double weight;
    if (!cJSON_IsString(phase))
        snprintf(out, n, "-");
    else if (number(canary, "weight", &weight))
        snprintf(out, n, "%s %.0f%%", phase->valuestring, weight);
    else
        snprintf(out, n, "%s", phase->valuestring);
}

enum { COL_ROUTE, COL_CLUSTER, COL_WEIGHT, COL_SHARE, COL_SUCCESS, COL_P99, COL_RATE, COL_CANARY, COL_COUNT };
static const char *const col_names[COL_COUNT] = {"ROUTE", "CLUSTER", "WEIGHT", "SHARE",
                                                 "SUCCESS", "P99", "RATE", "CANARY"};

typedef struct row_s {
    char cell[COL_COUNT][96];
} row_t;

static void print_row(const char *const *cells, const size_t *width)
{
    char line[COL_COUNT * 100];
    size_t n = 0;
    for (int c = 0; c < COL_COUNT; c++) {
        bool right = c == COL_WEIGHT || c == COL_SHARE;
        n += (size_t)snprintf(line + n, sizeof(line) - n, right ? "%*s  " : "%-*s  ", (int)width[c], cells[c]);
    }
    while (n > 0 && line[n - 1] == ' ')
        n--;
    printf("%.*s\n", (int)n, line);
}

static void print_table(const row_t *rows, size_t count)
{
    size_t width[COL_COUNT];
    for (int c = 0; c < COL_COUNT; c++) {
        width[c] = strlen(col_names[c]);
        for (size_t i = 0; i < count; i++)
            if (strlen(rows[i].cell[c]) > width[c])
                width[c] = strlen(rows[i].cell[c]);
    }
    print_row(col_names, width);
    for (size_t i = 0; i < count; i++) {
        const char *cells[COL_COUNT];
        for (int c = 0; c < COL_COUNT; c++)
            cells[c] = rows[i].cell[c];
        print_row(cells, width);
    }
}

static void print_header(const cJSON *st)
{
    const cJSON *version = field(st, "version");
    double generation = 0, uptime = 0;
    number(st, "generation", &generation);
    number(st, "uptime_seconds", &uptime);
    unsigned long long up = (unsigned long long)uptime;
    /* peers.leader false: say so first, before anyone steers the wrong replica */
    printf("veer %s  generation %.0f  up %llud%02lluh%02llum%02llus%s%s\n",
           cJSON_IsString(version) ? version->valuestring : "?", generation, up / 86400, up / 3600 % 24,
           up / 60 % 60, up % 60, cJSON_IsTrue(field(st, "draining")) ? "  DRAINING" : "",
           cJSON_IsFalse(field(st, "leader")) ? "  FOLLOWER (weights and canary runs come from the leader)" : "");
}

/* One line per endpoint whose health check does not pass, with why its last
 * probe failed, so a red endpoint needs no log search. Healthy ones stay
 * off: a fleet of hundreds would bury the table. */
static void print_sick_endpoints(const cJSON *st)
{
    bool first = true;
    const cJSON *cluster, *ep;
    cJSON_ArrayForEach(cluster, field(st, "clusters"))
    {
        const cJSON *cname = field(cluster, "name");
        cJSON_ArrayForEach(ep, field(cluster, "endpoints"))
        {
            const cJSON *health = field(ep, "health");
            const cJSON *state = field(health, "state");
            const cJSON *addr = field(ep, "address");
            const cJSON *lf = field(health, "last_failure");
            const cJSON *reason = field(lf, "reason"), *at = field(lf, "at");
            double streak = 0;
            if (!cJSON_IsString(state) || strcmp(state->valuestring, "healthy") == 0 || !cJSON_IsString(reason))
                continue;
            number(lf, "consecutive", &streak);
            if (first)
                printf("\n");
            first = false;
            printf("endpoint %s %s %s: %s (%.0f in a row, last %s)\n",
                   cJSON_IsString(cname) ? cname->valuestring : "?", cJSON_IsString(addr) ? addr->valuestring : "?",
                   state->valuestring, reason->valuestring, streak, cJSON_IsString(at) ? at->valuestring : "?");
        }
    }
}

static int cmd_status(ctl_t *c, int argc, char **argv)
{
    if (argc != 0) {
        fprintf(stderr, "veer ctl: status takes no arguments\n");
        return VEER_CTL_EUSAGE;
    }
    ctl_resp_t st, stats;
    int rc = expect_ok("GET /v1/status", call(c, "GET", "/v1/status", NULL, &st), &st);
    if (rc != 0) {
        resp_clear(&st);
        return rc;
    }
    /* /v1/stats is optional: an older veer answers 404 and the columns show "-" */
    if (call(c, "GET", "/v1/stats?window=30s", NULL, &stats) != 0 || stats.status != 200)
        resp_clear(&stats);
    const cJSON *routes = field(st.json, "routes");
    size_t cap = 0, count = 0;
    const cJSON *route;
    cJSON_ArrayForEach(route, routes)
        cap += (size_t)cJSON_GetArraySize(field(route, "weights")) + 1;
    row_t *rows = calloc(cap + 1, sizeof(*rows));
    if (rows == NULL) {
        resp_clear(&st);
        resp_clear(&stats);
        fprintf(stderr, "veer ctl: out of memory\n");
        return VEER_CTL_EREFUSED;
    }
    cJSON_ArrayForEach(route, routes)
    {
        const cJSON *name = field(route, "name");
        const cJSON *weights = field(route, "weights");
        if (!cJSON_IsString(name))
            continue;
        double total = 0;
        const cJSON *w;
        cJSON_ArrayForEach(w, weights)
            if (cJSON_IsNumber(w))
                total += w->valuedouble;
        bool first = true;
        cJSON_ArrayForEach(w, weights)
        {
            if (!cJSON_IsNumber(w) || w->string == NULL)
                continue;
            row_t *row = &rows[count++];
            snprintf(row->cell[COL_ROUTE], sizeof(row->cell[0]), "%s", first ? name->valuestring : "");
            snprintf(row->cell[COL_CLUSTER], sizeof(row->cell[0]), "%s", w->string);
            snprintf(row->cell[COL_WEIGHT], sizeof(row->cell[0]), "%.0f", w->valuedouble);
            snprintf(row->cell[COL_SHARE], sizeof(row->cell[0]), "%.1f%%",
                     total > 0 ? 100.0 * w->valuedouble / total : 0.0);
            const cJSON *s = series_of(st.json, name->valuestring, w->string);
            if (s == NULL)
                s = series_of(stats.json, name->valuestring, w->string);
            format_success(s, row->cell[COL_SUCCESS], sizeof(row->cell[0]));
            format_p99(s, row->cell[COL_P99], sizeof(row->cell[0]));
            format_rate(s, row->cell[COL_RATE], sizeof(row->cell[0]));
            if (first)
                format_canary(route, row->cell[COL_CANARY], sizeof(row->cell[0]));
            first = false;
        }
    }
    print_header(st.json);
    print_table(rows, count);
    print_sick_endpoints(st.json);
    free(rows);
    resp_clear(&st);
    resp_clear(&stats);
    return VEER_CTL_OK;
}

/* ---------------------------------------------------------------- mutations */

/* A route name as one URL path segment. */
static bool route_segment(const char *route, char *out, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)route; *p; p++) {
        if (o + 4 > n)
            return false;
        if (isalnum(*p) || *p == '-' || *p == '_' || *p == '.' || *p == '~') {
            out[o++] = (char)*p;
        } else {
            out[o++] = '%';
            out[o++] = hex[*p >> 4];
            out[o++] = hex[*p & 15];
        }
    }
    out[o] = '\0';
    return o > 0;
}

static bool parse_integer(const char *s, long long min, long long max, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (*s == '\0' || *end != '\0' || errno != 0 || v < min || v > max)
        return false;
    *out = v;
    return true;
}

static int cmd_weights(ctl_t *c, int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "veer ctl: weights needs a route and at least one CLUSTER=WEIGHT\n");
        return VEER_CTL_EUSAGE;
    }
    const char *route = argv[0];
    cJSON *body = cJSON_CreateObject();
    cJSON *weights = cJSON_AddObjectToObject(body, "weights");
    if (weights == NULL) {
        cJSON_Delete(body);
        fprintf(stderr, "veer ctl: out of memory\n");
        return VEER_CTL_EREFUSED;
    }
    for (int i = 1; i < argc; i++) {
        const char *eq = strchr(argv[i], '=');
        long long weight;
        if (eq == NULL || eq == argv[i] || !parse_integer(eq + 1, -1000000000LL, 1000000000LL, &weight)) {
            fprintf(stderr, "veer ctl: \"%s\": expected CLUSTER=WEIGHT with a whole number, e.g. canary=20\n",
                    argv[i]);
            cJSON_Delete(body);
            return VEER_CTL_EUSAGE;
        }
        char cluster[128];
        snprintf(cluster, sizeof(cluster), "%.*s", (int)(eq - argv[i]), argv[i]);
        if (cJSON_GetObjectItemCaseSensitive(weights, cluster) != NULL || (size_t)(eq - argv[i]) >= sizeof(cluster)) {
            fprintf(stderr, "veer ctl: \"%s\": cluster given twice or name too long\n", argv[i]);
            cJSON_Delete(body);
            return VEER_CTL_EUSAGE;
        }
        cJSON_AddNumberToObject(weights, cluster, (double)weight);
    }
    if (c->if_generation >= 0)
        cJSON_AddNumberToObject(body, "if_generation", (double)c->if_generation);
    if (c->force)
        cJSON_AddTrueToObject(body, "force");
    char *text = cJSON_PrintUnformatted(body);
    cJSON_Delete(body);
    char seg[512], path[600], what[700];
    if (text == NULL || !route_segment(route, seg, sizeof(seg))) {
        free(text);
        fprintf(stderr, "veer ctl: invalid route name \"%s\"\n", route);
        return VEER_CTL_EUSAGE;
    }
    snprintf(path, sizeof(path), "/v1/routes/%s/weights", seg);
    snprintf(what, sizeof(what), "weights %s", route);
    ctl_resp_t r;
    int rc = expect_ok(what, call(c, "PUT", path, text, &r), &r);
    free(text);
    if (rc == 0) {
        double generation = 0;
        number(r.json, "generation", &generation);
        printf("%s:", route);
        const cJSON *w;
        cJSON_ArrayForEach(w, field(r.json, "weights"))
            if (cJSON_IsNumber(w) && w->string != NULL)
                printf(" %s=%.0f", w->string, w->valuedouble);
        printf("  (generation %.0f)\n", generation);
    }
    resp_clear(&r);
    return rc;
}

static int cmd_reload(ctl_t *c, int argc, char **argv)
{
    if (argc != 0) {
        fprintf(stderr, "veer ctl: reload takes no arguments\n");
        return VEER_CTL_EUSAGE;
    }
    ctl_resp_t r;
    int rc = expect_ok("reload", call(c, "POST", "/v1/reload", NULL, &r), &r);
    if (rc == 0) {
        double generation = 0;
        number(r.json, "generation", &generation);
        printf("reloaded (generation %.0f)\n", generation);
    }
    resp_clear(&r);
    return rc;
}

static int cmd_drain(ctl_t *c, int argc, char **argv)
{
    if (argc != 0) {
        fprintf(stderr, "veer ctl: drain takes no arguments\n");
        return VEER_CTL_EUSAGE;
    }
    ctl_resp_t r;
    int rc = expect_ok("drain", call(c, "POST", "/v1/drain", NULL, &r), &r);
    if (rc == 0)
        printf("draining: veer stops accepting and exits once in-flight requests finish\n");
    resp_clear(&r);
    return rc;
}

/* ---------------------------------------------------------------- canary */

/* KEY=VALUE of `canary ROUTE start`: a JSON number, true/false/null, or
 * else a string ("10s", "green"). */
static int canary_start_body(int argc, char **argv, char **out)
{
    cJSON *body = cJSON_CreateObject();
    if (body == NULL)
        return VEER_CTL_EREFUSED;
    for (int i = 0; i < argc; i++) {
        const char *eq = strchr(argv[i], '=');
        char key[64];
        if (eq == NULL || eq == argv[i] || (size_t)(eq - argv[i]) >= sizeof(key)) {
            fprintf(stderr, "veer ctl: \"%s\": expected KEY=VALUE, e.g. interval=10s\n", argv[i]);
            cJSON_Delete(body);
            return VEER_CTL_EUSAGE;
        }
        snprintf(key, sizeof(key), "%.*s", (int)(eq - argv[i]), argv[i]);
        const char *v = eq + 1;
        char *end;
        double num = strtod(v, &end);
        cJSON *item;
        if (*v != '\0' && *end == '\0' && isfinite(num))
            item = cJSON_CreateNumber(num);
        else if (strcmp(v, "true") == 0 || strcmp(v, "false") == 0)
            item = cJSON_CreateBool(v[0] == 't');
        else if (strcmp(v, "null") == 0)
            item = cJSON_CreateNull();
        else
            item = cJSON_CreateString(v);
        if (item == NULL || cJSON_GetObjectItemCaseSensitive(body, key) != NULL) {
            fprintf(stderr, "veer ctl: \"%s\": key given twice\n", argv[i]);
            cJSON_Delete(item);
            cJSON_Delete(body);
            return VEER_CTL_EUSAGE;
        }
        cJSON_AddItemToObject(body, key, item);
    }
    *out = cJSON_PrintUnformatted(body);
    cJSON_Delete(body);
    return *out != NULL ? 0 : VEER_CTL_EREFUSED;
}

static const char *string_of(const cJSON *o, const char *key, const char *dflt)
{
    const cJSON *v = field(o, key);
    return cJSON_IsString(v) ? v->valuestring : dflt;
}

/* One side of an analysis: "99.5% P99 12.3ms (120 req)". */
static void format_side(const cJSON *side, char *out, size_t n)
{
    double req = 0, sr = -1, p99 = 0;
    number(side, "requests", &req);
    number(side, "success_rate", &sr);
    number(side, "p99_us", &p99);
    if (req <= 0)
        snprintf(out, n, "no requests");
    else
        snprintf(out, n, "%.2f%% P99 %.1fms (%.0f req)", sr, p99 / 1000.0, req);
}

/* The run in a few lines: a weight bar, checks, the last analysis. */
static void print_run(const char *route, const cJSON *run)
{
    double weight = 0, max_weight = 0, failed = 0, passed = 0, threshold = 0;
    const cJSON *pol = field(run, "policy");
    char bar[41], canary_side[96], stable_side[96];
    number(run, "weight", &weight);
    number(pol, "max_weight", &max_weight);
    number(pol, "threshold", &threshold);
    number(run, "failed_checks", &failed);
    number(run, "checks_passed", &passed);
    int filled = (int)(weight * 40.0 / 100.0 + 0.5);
    for (int i = 0; i < 40; i++)
        bar[i] = i < filled ? '#' : '.';
    bar[40] = '\0';
    printf("%s  %-11s %s -> %s  [%s] %3.0f%% (max %.0f%%)  checks: %.0f passed, %.0f/%.0f failed\n", route,
           string_of(run, "phase", "?"), string_of(run, "stable", "-"), string_of(run, "canary", "-"), bar, weight,
           max_weight, passed, failed, threshold);
    const cJSON *a = field(run, "last_analysis");
    if (cJSON_IsObject(a)) {
        format_side(field(a, "canary"), canary_side, sizeof(canary_side));
        format_side(field(a, "stable"), stable_side, sizeof(stable_side));
        printf("  last analysis: %s; canary %s; stable %s\n", string_of(a, "verdict", "?"), canary_side,
               stable_side);
    }
    const char *reason = string_of(run, "reason", "");
    if (reason[0] != '\0')
        printf("  %s\n", reason);
    fflush(stdout);
}

static bool phase_is_terminal(const char *phase)
{
    return strcmp(phase, "succeeded") == 0 || strcmp(phase, "rolled_back") == 0 || strcmp(phase, "idle") == 0;
}

static int canary_watch(ctl_t *c, const char *route, const char *path, const char *what)
{
    for (;;) {
        ctl_resp_t r;
        int rc = expect_ok(what, call(c, "GET", path, NULL, &r), &r);
        if (rc != 0) {
            resp_clear(&r);
            return rc;
        }
        print_run(route, r.json);
        const char *phase = string_of(r.json, "phase", "idle");
        if (phase_is_terminal(phase)) {
            rc = strcmp(phase, "rolled_back") == 0 ? VEER_CTL_EREFUSED : VEER_CTL_OK;
            resp_clear(&r);
            return rc;
        }
        resp_clear(&r);
        struct timespec second = {1, 0};
        nanosleep(&second, NULL);
    }
}

static int cmd_canary(ctl_t *c, int argc, char **argv)
{
    static const char *const verbs[] = {"start", "status", "pause", "resume", "promote", "abort"};
    if (argc < 2) {
        fprintf(stderr, "veer ctl: canary needs a route and one of start, status, pause, resume, promote, abort\n");
        return VEER_CTL_EUSAGE;
    }
    const char *route = argv[0], *verb = argv[1];
    bool known = false;
    for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
        known = known || strcmp(verb, verbs[i]) == 0;
    if (!known) {
        fprintf(stderr, "veer ctl: canary %s: unknown verb \"%s\"\n", route, verb);
        return VEER_CTL_EUSAGE;
    }
    if ((argc > 2 && strcmp(verb, "start") != 0) || (c->watch && strcmp(verb, "status") != 0)) {
        fprintf(stderr, "veer ctl: canary %s: only start takes KEY=VALUE, only status takes --watch\n", verb);
        return VEER_CTL_EUSAGE;
    }
    char seg[512], path[640], what[700];
    if (!route_segment(route, seg, sizeof(seg))) {
        fprintf(stderr, "veer ctl: invalid route name \"%s\"\n", route);
        return VEER_CTL_EUSAGE;
    }
    snprintf(what, sizeof(what), "canary %s %s", route, verb);
    if (strcmp(verb, "status") == 0) {
        snprintf(path, sizeof(path), "/v1/routes/%s/canary", seg);
        if (c->watch)
            return canary_watch(c, route, path, what);
    } else if (strcmp(verb, "start") == 0) {
        snprintf(path, sizeof(path), "/v1/routes/%s/canary", seg);
    } else {
        snprintf(path, sizeof(path), "/v1/routes/%s/canary/%s", seg, verb);
    }
    char *body = NULL;
    if (strcmp(verb, "start") == 0) {
        int brc = canary_start_body(argc - 2, argv + 2, &body);
        if (brc != 0)
            return brc;
    }
    ctl_resp_t r;
    int rc = expect_ok(what, call(c, strcmp(verb, "status") == 0 ? "GET" : "POST", path,
                                  body != NULL ? body : (strcmp(verb, "status") == 0 ? NULL : ""), &r),
                       &r);
    free(body);
    if (rc == 0)
        print_run(route, r.json);
    resp_clear(&r);
    return rc;
}

typedef struct ctl_command_s {
    const char *name;
    int (*run)(ctl_t *c, int argc, char **argv); /* argv: the command's own arguments */
} ctl_command_t;

static const ctl_command_t commands[] = {
    {"status", cmd_status},
    {"weights", cmd_weights},
    {"reload", cmd_reload},
    {"drain", cmd_drain},
    {"canary", cmd_canary},
};

/* ---------------------------------------------------------------- main */

/* Options may come before or after the command; what is left are the
 * command and its arguments, in order. */
int veer_ctl_main(int argc, char **argv)
{
    ctl_t c = {.timeout_ms = CTL_DEFAULT_TIMEOUT_MS, .if_generation = -1};
    const char *admin = getenv("VEER_ADMIN");
    const char *token_file = NULL;
    char **rest = calloc((size_t)argc + 1, sizeof(*rest));
    int nrest = 0, rc = VEER_CTL_EUSAGE;
    if (rest == NULL) {
        fprintf(stderr, "veer ctl: out of memory\n");
        return VEER_CTL_EREFUSED;
    }
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        bool has_value = i + 1 < argc;
        long long v;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            rc = VEER_CTL_OK;
            goto out;
        } else if (strcmp(a, "--admin") == 0 && has_value) {
            admin = argv[++i];
        } else if (strcmp(a, "--token-file") == 0 && has_value) {
            token_file = argv[++i];
        } else if (strcmp(a, "--timeout") == 0 && has_value) {
            if (!parse_integer(argv[++i], 1, 3600, &v)) {
                fprintf(stderr, "veer ctl: --timeout: whole seconds from 1 to 3600\n");
                goto out;
            }
            c.timeout_ms = (int)v * 1000;
        } else if (strcmp(a, "--if-generation") == 0 && has_value) {
            if (!parse_integer(argv[++i], 0, 9007199254740991LL, &v)) {
                fprintf(stderr, "veer ctl: --if-generation: a non-negative whole number\n");
                goto out;
            }
            c.if_generation = v;
        } else if (strcmp(a, "--force") == 0) {
            c.force = true;
        } else if (strcmp(a, "--watch") == 0) {
            c.watch = true;
        } else if (a[0] == '-' && a[1] == '-') {
            fprintf(stderr, "veer ctl: unknown option %s (or its value is missing)\n", a);
            usage(stderr);
            goto out;
        } else {
            rest[nrest++] = argv[i];
        }
    }
    if (nrest == 0) {
        usage(stderr);
        goto out;
    }
    const ctl_command_t *cmd = NULL;
    for (size_t k = 0; k < sizeof(commands) / sizeof(commands[0]); k++)
        if (strcmp(commands[k].name, rest[0]) == 0)
            cmd = &commands[k];
    if (cmd == NULL) {
        fprintf(stderr, "veer ctl: unknown command \"%s\"\n", rest[0]);
        usage(stderr);
        goto out;
    }
    if ((c.if_generation >= 0 || c.force) && cmd->run != cmd_weights) {
        fprintf(stderr, "veer ctl: --if-generation and --force go with weights\n");
        goto out;
    }
    if (c.watch && cmd->run != cmd_canary) {
        fprintf(stderr, "veer ctl: --watch goes with canary ROUTE status\n");
        goto out;
    }
    if (parse_admin(&c, admin != NULL && admin[0] ? admin : CTL_DEFAULT_ADMIN) < 0)
        goto out;
    if (token_file != NULL && read_token(&c, token_file) < 0)
        goto out;
    rc = cmd->run(&c, nrest - 1, rest + 1);
out:
    if (c.token != NULL) {
        explicit_bzero(c.token, strlen(c.token));
        free(c.token);
    }
    free(rest);
    return rc;
}
