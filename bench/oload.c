/* oload.c - a small open-loop HTTP/1.1 load generator for bench/run.sh.
 *
 * Why not h2load --rps: h2load's per-client rps timer never fires more often
 * than every 10 ms, so above 100 req/s per connection it sends bursts, and the
 * timers of all clients line up, so arrivals come in bursts of (connections x
 * requests per tick); the latency it reports is then mostly the time to drain a
 * burst. Debian's wrk is closed-loop. This tool sends requests on a fixed
 * schedule (request i is due at t0 + i/R, or Poisson arrivals with -P) over N
 * keep-alive connections, one request in flight per connection, and measures
 * latency from the time a request was DUE (so a stalled server is charged for
 * the requests it delayed: no coordinated omission) as well as from the time it
 * was sent.
 *
 *   oload -a 127.0.0.1 -p PORT [-u /path] [-H 'name: value']... [-c 20] -r RATE [-d 10] [-w 2] [-P] [-s SEED]
 *
 * Prints "key value" lines: requests, ok, non_2xx, errors, timeouts,
 * achieved_rps, p50_us, p90_us, p99_us, p999_us, max_us (from due time),
 * svc_p50_us, svc_p99_us (from send time), late_sends (sent > 1 ms after due).
 * Exit status 0 when every measured request got a 2xx response, 1 otherwise,
 * 2 on usage or connection errors.
 *
 * Responses may be Content-Length or chunked; no pipelining; Connection: close
 * from the server makes it reconnect. Single-threaded (epoll + timerfd).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define BUF_SIZE (256 * 1024)

enum { ST_IDLE, ST_HEAD, ST_BODY, ST_CHUNK_SIZE, ST_CHUNK_DATA, ST_CHUNK_CRLF, ST_TRAILER };

typedef struct conn {
    int fd;
    int state;
    int status;
    int close_after;
    uint64_t remaining; /* body or chunk bytes still expected */
    int64_t due_ns, sent_ns;
    int measured;
    char *buf;
    size_t len;
    struct conn *next_idle;
} conn_t;

static struct sockaddr_in g_addr;
static char g_req[2048];
static size_t g_req_len;
static int g_ep;
static conn_t *g_idle;
static uint32_t *g_lat, *g_svc;
static size_t g_nlat, g_cap;
static uint64_t g_ok, g_non2xx, g_errors, g_timeouts, g_late, g_requests;
static int64_t g_inflight;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void die(const char *msg) {
    fprintf(stderr, "oload: %s: %s\n", msg, strerror(errno));
    exit(2);
}

static int conn_open(conn_t *c) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    if (connect(fd, (struct sockaddr *)&g_addr, sizeof g_addr) != 0) {
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(g_ep, EPOLL_CTL_ADD, fd, &ev) != 0) die("epoll_ctl");
    c->fd = fd;
    c->state = ST_IDLE;
    c->len = 0;
    return 0;
}

static void make_idle(conn_t *c) {
    c->state = ST_IDLE;
    c->next_idle = g_idle;
    g_idle = c;
}

/* Close and reconnect; the caller decides whether it goes on the idle list. */
static void conn_reopen(conn_t *c) {
    epoll_ctl(g_ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    if (conn_open(c) != 0) die("reconnect");
}

static void conn_reset(conn_t *c) {
    conn_reopen(c);
    make_idle(c);
}

static void finish(conn_t *c, int error) {
    int64_t t = now_ns();
    g_inflight--;
    if (c->measured) {
        if (error) {
            g_errors++;
        } else {
            if (c->status >= 200 && c->status < 300) g_ok++;
            else g_non2xx++;
            if (g_nlat < g_cap) {
                int64_t l = (t - c->due_ns) / 1000, s = (t - c->sent_ns) / 1000;
                g_lat[g_nlat] = (uint32_t)(l < 0 ? 0 : l);
                g_svc[g_nlat] = (uint32_t)(s < 0 ? 0 : s);
                g_nlat++;
            }
        }
    }
    if (error || c->close_after) conn_reset(c);
    else make_idle(c);
}

static int send_req(conn_t *c, int64_t due, int measured) {
    ssize_t n = write(c->fd, g_req, g_req_len);
    if (n != (ssize_t)g_req_len) return -1; /* a few hundred bytes into an idle socket */
    c->state = ST_HEAD;
    c->status = 0;
    c->close_after = 0;
    c->due_ns = due;
    c->sent_ns = now_ns();
    c->measured = measured;
    if (measured) {
        g_requests++;
        if (c->sent_ns - due > 1000000) g_late++;
    }
    g_inflight++;
    return 0;
}

/* Parse what is buffered. Returns 1 when a response completed, 0 when more data
 * is needed, -1 on a protocol error. */
static int parse(conn_t *c) {
    for (;;) {
        char *p = c->buf, *end = c->buf + c->len;
        switch (c->state) {
        case ST_HEAD: {
            char *e = memmem(p, c->len, "\r\n\r\n", 4);
            if (!e) return c->len >= BUF_SIZE ? -1 : 0;
            if (c->len < 12 || strncmp(p, "HTTP/1.", 7) != 0) return -1;
            c->status = atoi(p + 9);
            int chunked = 0, have_cl = 0;
            uint64_t cl = 0;
            char *line = memchr(p, '\n', (size_t)(e - p)) + 1;
            while (line < e) {
                char *eol = memmem(line, (size_t)(e + 2 - line), "\r\n", 2);
                if (!eol) break;
                size_t ll = (size_t)(eol - line);
                if (ll > 15 && strncasecmp(line, "content-length:", 15) == 0) {
                    cl = strtoull(line + 15, NULL, 10);
                    have_cl = 1;
                } else if (ll > 18 && strncasecmp(line, "transfer-encoding:", 18) == 0) {
                    if (memmem(line, ll, "chunked", 7)) chunked = 1;
                } else if (ll > 11 && strncasecmp(line, "connection:", 11) == 0) {
                    if (memmem(line, ll, "close", 5)) c->close_after = 1;
                }
                line = eol + 2;
            }
            size_t hl = (size_t)(e + 4 - p);
            memmove(c->buf, c->buf + hl, c->len - hl);
            c->len -= hl;
            if (c->status == 204 || c->status == 304 || (c->status >= 100 && c->status < 200)) {
                if (c->status < 200) { c->state = ST_HEAD; continue; }
                return 1;
            }
            if (chunked) c->state = ST_CHUNK_SIZE;
            else if (have_cl) { c->state = ST_BODY; c->remaining = cl; }
            else return -1; /* read-until-close bodies: not supported */
            continue;
        }
        case ST_BODY: {
            size_t take = c->len < c->remaining ? c->len : (size_t)c->remaining;
            memmove(c->buf, c->buf + take, c->len - take);
            c->len -= take;
            c->remaining -= take;
            if (c->remaining == 0) {
                if (c->len) return -1; /* unexpected extra bytes */
                return 1;
            }
            return 0;
        }
        case ST_CHUNK_SIZE: {
            char *eol = memmem(p, c->len, "\r\n", 2);
            if (!eol) return c->len > 1024 ? -1 : 0;
            uint64_t sz = strtoull(p, NULL, 16);
            size_t hl = (size_t)(eol + 2 - p);
            memmove(c->buf, c->buf + hl, c->len - hl);
            c->len -= hl;
            if (sz == 0) c->state = ST_TRAILER;
            else { c->state = ST_CHUNK_DATA; c->remaining = sz; }
            continue;
        }
        case ST_CHUNK_DATA: {
            size_t take = c->len < c->remaining ? c->len : (size_t)c->remaining;
            memmove(c->buf, c->buf + take, c->len - take);
            c->len -= take;
            c->remaining -= take;
            if (c->remaining) return 0;
            c->state = ST_CHUNK_CRLF;
            continue;
        }
        case ST_CHUNK_CRLF:
            if (c->len < 2) return 0;
            if (p[0] != '\r' || p[1] != '\n') return -1;
            memmove(c->buf, c->buf + 2, c->len - 2);
            c->len -= 2;
            c->state = ST_CHUNK_SIZE;
            continue;
        case ST_TRAILER: {
            char *eol = memmem(p, c->len, "\r\n", 2);
            if (!eol) return 0;
            size_t hl = (size_t)(eol + 2 - p);
            memmove(c->buf, c->buf + hl, c->len - hl);
            c->len -= hl;
            if (hl == 2) return c->len ? -1 : 1;
            continue;
        }
        default:
            (void)end;
            return -1; /* data while idle */
        }
    }
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static uint32_t pct(uint32_t *v, size_t n, double p) {
    if (!n) return 0;
    size_t k = (size_t)ceil(p / 100.0 * (double)n);
    if (k < 1) k = 1;
    if (k > n) k = n;
    return v[k - 1];
}

static void usage(void) {
    fprintf(stderr, "usage: oload -a ADDR -p PORT [-u PATH] [-H 'NAME: VALUE']... [-c CONNS] -r RATE [-d SECS] [-w SECS] "
                    "[-P] [-s SEED]\n");
    exit(2);
}

int main(int argc, char **argv) {
    const char *addr = "127.0.0.1", *path = "/";
    char headers[1024] = ""; /* extra request header lines (-H), CRLF-terminated */
    size_t headers_len = 0;
    int port = 0, conns = 20, poisson = 0, opt;
    double rate = 0, dur = 10, warm = 2;
    unsigned seed = 1;
    while ((opt = getopt(argc, argv, "a:p:u:H:c:r:d:w:Ps:")) != -1) {
        switch (opt) {
        case 'H': {
            int n = snprintf(headers + headers_len, sizeof headers - headers_len, "%s\r\n", optarg);
            if (n < 0 || (size_t)n >= sizeof headers - headers_len || strpbrk(optarg, "\r\n") || !strchr(optarg, ':')) {
                fprintf(stderr, "oload: -H '%s': one 'name: value' line, %zu bytes of headers at most\n", optarg,
                        sizeof headers - 1);
                exit(2);
            }
            headers_len += (size_t)n;
            break;
        }
        case 'a': addr = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 'u': path = optarg; break;
        case 'c': conns = atoi(optarg); break;
        case 'r': rate = atof(optarg); break;
        case 'd': dur = atof(optarg); break;
        case 'w': warm = atof(optarg); break;
        case 'P': poisson = 1; break;
        case 's': seed = (unsigned)strtoul(optarg, NULL, 10); break;
        default: usage();
        }
    }
    if (port <= 0 || rate <= 0 || conns <= 0 || dur <= 0 || warm < 0) usage();
    g_addr.sin_family = AF_INET;
    g_addr.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, addr, &g_addr.sin_addr) != 1) usage();
    g_req_len = (size_t)snprintf(g_req, sizeof g_req,
                                 "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: veer-bench-oload\r\n"
                                 "Accept: */*\r\n%s\r\n", path, addr, port, headers);
    if (g_req_len >= sizeof g_req) {
        fprintf(stderr, "oload: the request head is over %zu bytes\n", sizeof g_req - 1);
        exit(2);
    }

    g_ep = epoll_create1(0);
    if (g_ep < 0) die("epoll_create1");
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    if (tfd < 0) die("timerfd_create");
    struct epoll_event tev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(g_ep, EPOLL_CTL_ADD, tfd, &tev);

    conn_t *cs = calloc((size_t)conns, sizeof *cs);
    for (int i = 0; i < conns; i++) {
        cs[i].buf = malloc(BUF_SIZE);
        if (!cs[i].buf) die("malloc");
        if (conn_open(&cs[i]) != 0) die("connect");
        make_idle(&cs[i]);
    }
    g_cap = (size_t)(rate * dur * 1.2) + 1024;
    g_lat = malloc(g_cap * sizeof *g_lat);
    g_svc = malloc(g_cap * sizeof *g_svc);
    if (!g_lat || !g_svc) die("malloc");

    srand48(seed);
    const double gap_ns = 1e9 / rate;
    const int64_t t0 = now_ns() + 20000000LL; /* 20 ms from now */
    const int64_t t_measure = t0 + (int64_t)(warm * 1e9);
    const int64_t t_end = t_measure + (int64_t)(dur * 1e9);
    double next_off = 0; /* ns after t0 of the next due request */
    int64_t next_due = t0;
    int64_t drain_deadline = 0;
    struct epoll_event evs[256];

    for (;;) {
        int64_t t = now_ns();
        /* send what is due, on idle connections */
        while (next_due < t_end && next_due <= t && g_idle) {
            conn_t *c = g_idle;
            g_idle = c->next_idle;
            if (send_req(c, next_due, next_due >= t_measure) != 0) {
                if (next_due >= t_measure) { g_requests++; g_errors++; }
                conn_reset(c);
            }
            next_off += poisson ? -log(1.0 - drand48()) * gap_ns : gap_ns;
            next_due = t0 + (int64_t)next_off;
        }
        if (next_due >= t_end) {
            if (g_inflight == 0) break;
            if (!drain_deadline) drain_deadline = t + 5000000000LL;
            if (t > drain_deadline) {
                for (int i = 0; i < conns; i++)
                    if (cs[i].state != ST_IDLE && cs[i].measured) g_timeouts++;
                break;
            }
        }
        /* arm the timer for the next due request (if a connection is free) */
        struct itimerspec its = {0};
        if (next_due < t_end && g_idle) {
            int64_t at = next_due > t ? next_due : t + 1000;
            its.it_value.tv_sec = at / 1000000000LL;
            its.it_value.tv_nsec = at % 1000000000LL;
        }
        timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL);
        int n = epoll_wait(g_ep, evs, 256, 100);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            conn_t *c = evs[i].data.ptr;
            if (!c) {
                uint64_t x;
                while (read(tfd, &x, sizeof x) > 0) {}
                continue;
            }
            for (;;) {
                if (c->len >= BUF_SIZE) { finish(c, 1); break; }
                ssize_t r = read(c->fd, c->buf + c->len, BUF_SIZE - c->len);
                if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
                if (r <= 0 || c->state == ST_IDLE) {
                    if (c->state != ST_IDLE) finish(c, 1);
                    else conn_reopen(c); /* closed (or spoke) while idle: it stays on the idle list */
                    break;
                }
                c->len += (size_t)r;
                int rc = parse(c);
                if (rc < 0) { finish(c, 1); break; }
                if (rc == 1) { finish(c, 0); break; }
            }
        }
    }

    qsort(g_lat, g_nlat, sizeof *g_lat, cmp_u32);
    qsort(g_svc, g_nlat, sizeof *g_svc, cmp_u32);
    printf("requests %llu\nok %llu\nnon_2xx %llu\nerrors %llu\ntimeouts %llu\n",
           (unsigned long long)g_requests, (unsigned long long)g_ok, (unsigned long long)g_non2xx,
           (unsigned long long)g_errors, (unsigned long long)g_timeouts);
    printf("achieved_rps %.1f\n", (double)g_nlat / dur);
    printf("p50_us %u\np90_us %u\np99_us %u\np999_us %u\nmax_us %u\n", pct(g_lat, g_nlat, 50),
           pct(g_lat, g_nlat, 90), pct(g_lat, g_nlat, 99), pct(g_lat, g_nlat, 99.9),
           g_nlat ? g_lat[g_nlat - 1] : 0);
    printf("svc_p50_us %u\nsvc_p99_us %u\nlate_sends %llu\n", pct(g_svc, g_nlat, 50),
           pct(g_svc, g_nlat, 99), (unsigned long long)g_late);
    return (g_non2xx || g_errors || g_timeouts || g_ok == 0) ? 1 : 0;
}
