/* accesslog.c - the access log (see accesslog.h): the line formatter, the
 * per-worker single-producer/single-consumer byte ring, the writer thread,
 * and the glue that turns a finished exchange into a line. The ring only ever
 * holds whole lines (head moves after a line is copied in); the writer may
 * write part of one, and continues with the rest, in order, next time. */
#include "accesslog.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "exchange.h"
#include "log.h"
#include "trace.h"

#define WRITER_TICK_MS 100        /* longest a line waits in a ring when nobody kicks */
#define DROP_REPORT_EVERY_MS 10000 /* at most one "dropped" warning per period */

/* ---------------------------------------------------------------- format */

/* Output caps per field (escaped bytes): with the fixed text they add up to
 * well under VEER_ACCESSLOG_LINE_MAX, so formatting needs no other checks. */
#define CAP_PATH 4096
#define CAP_AUTHORITY 512
#define CAP_REQUEST_ID (2 * VEER_REQUEST_ID_MAX)
#define CAP_NAME 192

static const char hex_digits[] = "0123456789abcdef";

/* s as a JSON string (quotes included), at most cap bytes between the quotes.
 * Everything outside printable ASCII is escaped, so the line is ASCII. */
static char *put_str(char *p, veer_iov_t s, size_t cap, uint32_t *flags)
{
    if (s.base == NULL) {
        memcpy(p, "null", 4);
        return p + 4;
    }
    char *start = ++p;
    p[-1] = '"';
    for (size_t i = 0; i < s.len; i++) {
        unsigned char c = (unsigned char)s.base[i];
        size_t need = (c >= 0x20 && c < 0x7f) ? (c == '"' || c == '\\' ? 2 : 1) : 6;
        if ((size_t)(p - start) + need > cap) {
            *flags |= VEER_AL_TRUNCATED;
            break;
        }
        if (need == 1) {
            *p++ = (char)c;
        } else if (need == 2) {
            *p++ = '\\';
            *p++ = (char)c;
        } else {
            memcpy(p, "\\u00", 4);
            p[4] = hex_digits[c >> 4];
            p[5] = hex_digits[c & 15];
            p += 6;
        }
    }
    *p++ = '"';
    return p;
}

#define PUT_LIT(p, s) (memcpy((p), (s), sizeof(s) - 1), (p) += sizeof(s) - 1)

/* µs as milliseconds with three decimals: 1234567 -> "1234.567". */
static char *put_ms(char *p, uint64_t us)
{
    p = veer_put_u64(p, us / 1000);
    uint32_t frac = (uint32_t)(us % 1000);
    *p++ = '.';
    *p++ = (char)('0' + frac / 100);
    *p++ = (char)('0' + frac / 10 % 10);
    *p++ = (char)('0' + frac % 10);
    return p;
}

static char *put_time(char *p, int64_t time_us, veer_altime_t *cache)
{
    int64_t sec = time_us >= 0 ? time_us / 1000000 : 0;
    uint32_t ms = time_us >= 0 ? (uint32_t)(time_us % 1000000 / 1000) : 0;
    if (cache->text[0] == '\0' || sec != cache->sec) {
        time_t t = (time_t)sec;
        struct tm tm;
        gmtime_r(&t, &tm);
        snprintf(cache->text, sizeof(cache->text), "%04u-%02u-%02uT%02u:%02u:%02u",
                 (unsigned)(tm.tm_year + 1900) % 10000, (unsigned)(tm.tm_mon + 1) % 100, (unsigned)tm.tm_mday % 100,
                 (unsigned)tm.tm_hour % 100, (unsigned)tm.tm_min % 100, (unsigned)tm.tm_sec % 100);
        cache->sec = sec;
    }
    size_t n = strlen(cache->text);
    memcpy(p, cache->text, n);
    p += n;
    *p++ = '.';
    *p++ = (char)('0' + ms / 100);
    *p++ = (char)('0' + ms / 10 % 10);
    *p++ = (char)('0' + ms % 10);
    *p++ = 'Z';
    return p;
}

static const struct {
    uint32_t bit;
    const char *name;
} flag_names[] = {
    {VEER_AL_LOCAL, "local"},           {VEER_AL_TIMEOUT, "timeout"},       {VEER_AL_OVERFLOW, "overflow"},
    {VEER_AL_RESET, "reset"},           {VEER_AL_CONNECT_FAIL, "connect_fail"}, {VEER_AL_PROTOCOL, "upstream_protocol"},
    {VEER_AL_INCOMPLETE, "incomplete"}, {VEER_AL_TRUNCATED, "truncated"},
};

size_t veer_accesslog_format(char *out, size_t cap, const veer_alentry_t *e, veer_altime_t *cache)
{
    if (cap < VEER_ACCESSLOG_LINE_MAX)
        return 0;
    uint32_t flags = e->flags;
    char *p = out;
    PUT_LIT(p, "{\"time\":\"");
    p = put_time(p, e->time_us, cache);
    PUT_LIT(p, "\",\"request_id\":");
    p = put_str(p, e->request_id, CAP_REQUEST_ID, &flags);
    PUT_LIT(p, ",\"trace_id\":");
    p = put_str(p, e->trace_id, 32, &flags);
    PUT_LIT(p, ",\"listener\":");
    p = put_str(p, e->listener, CAP_NAME, &flags);
    PUT_LIT(p, ",\"protocol\":");
    p = put_str(p, e->protocol, 16, &flags);
    PUT_LIT(p, ",\"client\":");
    p = put_str(p, e->client, 64, &flags);
    PUT_LIT(p, ",\"method\":");
    p = put_str(p, e->method, CAP_NAME, &flags);
    PUT_LIT(p, ",\"path\":");
    p = put_str(p, e->path, CAP_PATH, &flags);
    PUT_LIT(p, ",\"authority\":");
    p = put_str(p, e->authority, CAP_AUTHORITY, &flags);
    PUT_LIT(p, ",\"route\":");
    p = put_str(p, e->route, CAP_NAME, &flags);
    PUT_LIT(p, ",\"cluster\":");
    p = put_str(p, e->cluster, CAP_NAME, &flags);
    PUT_LIT(p, ",\"endpoint\":");
    p = put_str(p, e->endpoint, 80, &flags);
    PUT_LIT(p, ",\"status\":");
    p = veer_put_u64(p, e->status > 0 && e->status < 1000 ? (uint64_t)e->status : 0);
    PUT_LIT(p, ",\"bytes_in\":");
    p = veer_put_u64(p, e->bytes_in);
    PUT_LIT(p, ",\"bytes_out\":");
    p = veer_put_u64(p, e->bytes_out);
    PUT_LIT(p, ",\"duration_ms\":");
    p = put_ms(p, e->duration_us);
    PUT_LIT(p, ",\"upstream_ms\":");
    if (e->upstream_us >= 0)
        p = put_ms(p, (uint64_t)e->upstream_us);
    else
        PUT_LIT(p, "null");
    PUT_LIT(p, ",\"attempts\":");
    p = veer_put_u64(p, e->attempts);
    PUT_LIT(p, ",\"flags\":[");
    bool first = true;
    for (size_t i = 0; i < sizeof(flag_names) / sizeof(flag_names[0]); i++) {
        if (!(flags & flag_names[i].bit))
            continue;
        if (!first)
            *p++ = ',';
        first = false;
        *p++ = '"';
        size_t n = strlen(flag_names[i].name);
        memcpy(p, flag_names[i].name, n);
        p += n;
        *p++ = '"';
    }
    PUT_LIT(p, "]}\n");
    return (size_t)(p - out);
}

/* ---------------------------------------------------------------- ring */

struct veer_alring_s {
    /* the producer's (a worker's) cache line */
    _Atomic uint64_t head;      /* bytes ever appended */
    uint64_t tail_seen;         /* the consumer's tail when last looked at */
    atomic_uint_fast64_t dropped, lines;
    atomic_bool enabled;        /* set by the writer/main thread when the log is on */
    atomic_bool *kicked;        /* shared: a wake-up is pending */
    int kick_fd;                /* the writer's eventfd; -1 in unit tests */
    char *buf;
    uint64_t cap;
    veer_altime_t time;
    /* the consumer's (the writer's) cache line */
    _Alignas(64) _Atomic uint64_t tail; /* bytes ever written out */
    _Alignas(64) char scratch[VEER_ACCESSLOG_LINE_MAX]; /* the producer formats here */
};

veer_alring_t *veer_alring_new(size_t cap)
{
    veer_alring_t *r;
    if (cap < VEER_ACCESSLOG_LINE_MAX || posix_memalign((void **)&r, 64, sizeof(*r)) != 0)
        return NULL;
    memset(r, 0, offsetof(veer_alring_t, scratch));
    r->buf = malloc(cap);
    if (r->buf == NULL) {
        free(r);
        return NULL;
    }
    r->cap = cap;
    r->kick_fd = -1;
    return r;
}

void veer_alring_free(veer_alring_t *r)
{
    if (r == NULL)
        return;
    free(r->buf);
    free(r);
}

static void ring_kick(veer_alring_t *r)
{
    if (r->kicked == NULL || atomic_load_explicit(r->kicked, memory_order_relaxed) ||
        atomic_exchange_explicit(r->kicked, true, memory_order_acq_rel))
        return;
    uint64_t one = 1;
    ssize_t n = write(r->kick_fd, &one, sizeof(one));
    (void)n; /* an eventfd write fails only when the counter is saturated: a wake-up is pending anyway */
}

bool veer_alring_put(veer_alring_t *r, const char *line, size_t len)
{
    uint64_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
    if (head + len - r->tail_seen > r->cap) {
        r->tail_seen = atomic_load_explicit(&r->tail, memory_order_acquire);
        if (head + len - r->tail_seen > r->cap) {
            atomic_store_explicit(&r->dropped, atomic_load_explicit(&r->dropped, memory_order_relaxed) + 1,
                                  memory_order_relaxed);
            return false;
        }
    }
    size_t off = (size_t)(head % r->cap), first = len < r->cap - off ? len : (size_t)(r->cap - off);
    memcpy(r->buf + off, line, first);
    memcpy(r->buf, line + first, len - first);
    atomic_store_explicit(&r->head, head + len, memory_order_release);
    atomic_store_explicit(&r->lines, atomic_load_explicit(&r->lines, memory_order_relaxed) + 1, memory_order_relaxed);
    /* Over half full: wake the writer now rather than at its next tick. */
    if (head + len - r->tail_seen > r->cap / 2) {
        r->tail_seen = atomic_load_explicit(&r->tail, memory_order_acquire);
        if (head + len - r->tail_seen > r->cap / 2)
            ring_kick(r);
    }
    return true;
}

size_t veer_alring_peek(veer_alring_t *r, struct iovec iov[2])
{
    uint64_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
    uint64_t head = atomic_load_explicit(&r->head, memory_order_acquire);
    size_t n = (size_t)(head - tail), off = (size_t)(tail % r->cap);
    size_t first = n < r->cap - off ? n : (size_t)(r->cap - off);
    iov[0] = (struct iovec){r->buf + off, first};
    iov[1] = (struct iovec){r->buf, n - first};
    return n;
}

void veer_alring_consume(veer_alring_t *r, size_t n)
{
    uint64_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
    atomic_store_explicit(&r->tail, tail + n, memory_order_release);
}

uint64_t veer_alring_dropped(const veer_alring_t *r)
{
    return atomic_load_explicit(&r->dropped, memory_order_relaxed);
}

uint64_t veer_alring_lines(const veer_alring_t *r)
{
    return atomic_load_explicit(&r->lines, memory_order_relaxed);
}

/* ---------------------------------------------------------------- writer */

struct veer_accesslog_s {
    veer_alring_t **rings;
    uint32_t ring_count;
    size_t ring_bytes;
    atomic_bool kicked;
    int kick_fd;            /* eventfd */
    pthread_t thread;
    bool thread_started;
    atomic_bool stop, reopen;
    atomic_bool control;    /* a reopen or a switch waits for the writer */
    /* writer-owned */
    int fd;                 /* -1: no log */
    char *path;             /* NULL: none */
    atomic_uint_fast64_t lost; /* lines still in the rings when the exit wait ran out */
    uint64_t discarded;     /* lines recorded while the log was being turned off */
    uint64_t drops_reported, last_report_ms;
    uint64_t last_error_ms;
    struct iovec *iov;      /* [2 * ring_count] */
    size_t *peeked;         /* [ring_count]: bytes of each ring in the current writev */
    /* main thread -> writer: a file switch from a reload */
    pthread_mutex_t lock;
    bool switch_pending;
    int switch_fd;
    char *switch_path;
    /* main thread: the path of the last commit, and what prepare opened */
    char *main_path;
    bool prepared;
    int prepared_fd;
    char *prepared_path;
};

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static bool same_path(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* Non-blocking, so a sink that stops taking bytes (a pipe nobody reads) can
 * never hold the writer past the exit wait. stdout is opened anew through
 * /proc so the flag does not leak into a description shared with others. */
static int open_sink(const char *path, char *err, size_t errlen)
{
    int fd;
    if (strcmp(path, "-") == 0) {
        fd = open("/proc/self/fd/1", O_WRONLY | O_APPEND | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
        if (fd < 0)
            fd = fcntl(STDOUT_FILENO, F_DUPFD_CLOEXEC, 3); /* e.g. a socket: blocking writes then */
        if (fd < 0)
            snprintf(err, errlen, "access_log.path: cannot use stdout: %s", strerror(errno));
        return fd;
    }
    fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NONBLOCK | O_NOCTTY, 0640);
    if (fd < 0 && errno == ENXIO)
        snprintf(err, errlen, "access_log.path: cannot open %s: a FIFO with no reader", path);
    else if (fd < 0)
        snprintf(err, errlen, "access_log.path: cannot open %s: %s", path, strerror(errno));
    return fd;
}

static void set_enabled(veer_accesslog_t *al, bool on)
{
    for (uint32_t i = 0; i < al->ring_count; i++)
        atomic_store_explicit(&al->rings[i]->enabled, on, memory_order_relaxed);
}

static size_t count_lines(const struct iovec *iov, int n)
{
    size_t lines = 0;
    for (int i = 0; i < n; i++) {
        const char *p = iov[i].iov_base, *end = p + iov[i].iov_len;
        while (p < end && (p = memchr(p, '\n', (size_t)(end - p))) != NULL) {
            lines++;
            p++;
        }
    }
    return lines;
}

enum { DRAIN_EMPTY, DRAIN_MORE, DRAIN_BLOCKED, DRAIN_FAILED };

/* Write what the rings hold (as of now) in as few writev calls as the
 * kernel allows. Bytes go out ring by ring in order, so a partial write
 * leaves the rest of a line at the front of its ring for the next call. */
static int drain(veer_accesslog_t *al)
{
    int iovcnt = 0;
    size_t total = 0;
    for (uint32_t i = 0; i < al->ring_count; i++) {
        struct iovec two[2];
        al->peeked[i] = iovcnt + 2 <= IOV_MAX ? veer_alring_peek(al->rings[i], two) : 0;
        for (int k = 0; k < 2 && al->peeked[i] > 0; k++)
            if (two[k].iov_len > 0)
                al->iov[iovcnt++] = two[k];
        total += al->peeked[i];
    }
    if (total == 0)
        return DRAIN_EMPTY;
    size_t done;
    if (al->fd < 0) {
        /* recorded while the log was being turned off: nowhere to go */
        al->discarded += count_lines(al->iov, iovcnt);
        done = total;
    } else {
        ssize_t n = writev(al->fd, al->iov, iovcnt);
        if (n < 0) {
            if (errno == EINTR)
                return DRAIN_MORE;
            if (errno == EAGAIN)
                return DRAIN_BLOCKED;
            uint64_t now = mono_ms();
            if (al->last_error_ms == 0 || now - al->last_error_ms >= DROP_REPORT_EVERY_MS) {
                veer_log_error("access log: write to %s failed: %s (lines wait in the rings, then are dropped)",
                               al->path, strerror(errno));
                al->last_error_ms = now;
            }
            return DRAIN_FAILED;
        }
        done = (size_t)n;
    }
    for (uint32_t i = 0; i < al->ring_count && done > 0; i++) {
        size_t take = al->peeked[i] < done ? al->peeked[i] : done;
        veer_alring_consume(al->rings[i], take);
        done -= take;
    }
    return DRAIN_MORE;
}

static uint64_t drops_total(veer_accesslog_t *al)
{
    uint64_t n = atomic_load_explicit(&al->lost, memory_order_relaxed);
    for (uint32_t i = 0; i < al->ring_count; i++)
        n += veer_alring_dropped(al->rings[i]);
    return n;
}

static void report_drops(veer_accesslog_t *al)
{
    uint64_t total = drops_total(al), now = mono_ms();
    if (total == al->drops_reported || (al->last_report_ms != 0 && now - al->last_report_ms < DROP_REPORT_EVERY_MS))
        return;
    veer_log_warn("access log: %llu lines dropped (%llu in all): the rings (access_log.buffer_bytes %zu per worker) "
                  "were full because %s did not take lines fast enough",
                  (unsigned long long)(total - al->drops_reported), (unsigned long long)total, al->ring_bytes,
                  al->path != NULL ? al->path : "the log");
    al->drops_reported = total;
    al->last_report_ms = now;
}

/* Drain to the current file until empty or it stops taking bytes. */
static void flush_now(veer_accesslog_t *al)
{
    for (int i = 0; i < 64 && drain(al) == DRAIN_MORE; i++)
        ;
}

static void handle_control(veer_accesslog_t *al)
{
    if (!atomic_exchange(&al->control, false))
        return;
    if (atomic_exchange(&al->reopen, false) && al->path != NULL && strcmp(al->path, "-") != 0) {
        char err[512];
        flush_now(al);
        int fd = open_sink(al->path, err, sizeof(err));
        if (fd < 0) {
            veer_log_error("access log: reopen failed, still writing to the old file: %s", err);
        } else {
            close(al->fd);
            al->fd = fd;
            veer_log_info("access log: reopened %s", al->path);
        }
    }
    pthread_mutex_lock(&al->lock);
    bool pending = al->switch_pending;
    int fd = al->switch_fd;
    char *path = al->switch_path;
    al->switch_pending = false;
    al->switch_path = NULL;
    pthread_mutex_unlock(&al->lock);
    if (!pending)
        return;
    flush_now(al);
    if (al->fd >= 0)
        close(al->fd);
    free(al->path);
    al->fd = fd;
    al->path = path;
    if (fd >= 0)
        set_enabled(al, true);
    veer_log_info("access log: now %s%s", path != NULL ? "writing to " : "off", path != NULL ? path : "");
}

static void writer_wait(veer_accesslog_t *al, bool want_out, int timeout_ms)
{
    struct pollfd pfd[2] = {{.fd = al->kick_fd, .events = POLLIN}, {.fd = al->fd, .events = POLLOUT}};
    if (poll(pfd, want_out && al->fd >= 0 ? 2 : 1, timeout_ms) > 0 && (pfd[0].revents & POLLIN)) {
        uint64_t v;
        ssize_t n = read(al->kick_fd, &v, sizeof(v));
        (void)n;
    }
}

static void *writer_main(void *arg)
{
    veer_accesslog_t *al = arg;
    uint64_t deadline = 0;
    for (;;) {
        bool stopping = atomic_load(&al->stop);
        if (stopping && deadline == 0)
            deadline = mono_ms() + VEER_ACCESSLOG_EXIT_WAIT_MS;
        handle_control(al);
        int rc;
        while ((rc = drain(al)) == DRAIN_MORE)
            if (atomic_load(&al->control))
                break; /* a busy log must not starve a reopen */
        /* Producers may kick again once there was progress. While the sink
         * takes nothing, they must not: a kick per line would be a syscall
         * per request for nothing; POLLOUT or the tick wakes the writer. */
        if (rc == DRAIN_EMPTY || rc == DRAIN_MORE)
            atomic_store(&al->kicked, false);
        report_drops(al);
        if (stopping && (rc == DRAIN_EMPTY || mono_ms() >= deadline))
            break;
        if (rc != DRAIN_MORE) /* with the log off only main's wake-ups matter: no tick */
            writer_wait(al, rc == DRAIN_BLOCKED, stopping ? 20 : al->fd < 0 ? -1 : WRITER_TICK_MS);
    }
    /* Whatever a stuck sink did not take by the deadline is lost: count it. */
    for (uint32_t i = 0; i < al->ring_count; i++) {
        struct iovec two[2];
        size_t n = veer_alring_peek(al->rings[i], two);
        atomic_fetch_add_explicit(&al->lost, count_lines(two, 2), memory_order_relaxed);
        veer_alring_consume(al->rings[i], n);
    }
    al->last_report_ms = 0;
    report_drops(al);
    return NULL;
}

veer_accesslog_t *veer_accesslog_new(uint32_t worker_count, size_t ring_bytes, const char *path, char *err,
                                     size_t errlen)
{
    veer_accesslog_t *al = calloc(1, sizeof(*al));
    if (al == NULL) {
        snprintf(err, errlen, "access log: out of memory");
        return NULL;
    }
    al->fd = al->kick_fd = al->switch_fd = al->prepared_fd = -1;
    al->ring_bytes = ring_bytes;
    pthread_mutex_init(&al->lock, NULL);
    al->rings = calloc(worker_count ? worker_count : 1, sizeof(*al->rings));
    al->iov = calloc(2 * (worker_count ? worker_count : 1), sizeof(*al->iov));
    al->peeked = calloc(worker_count ? worker_count : 1, sizeof(*al->peeked));
    if (al->rings == NULL || al->iov == NULL || al->peeked == NULL) {
        snprintf(err, errlen, "access log: out of memory");
        veer_accesslog_free(al);
        return NULL;
    }
    al->kick_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (al->kick_fd < 0) {
        snprintf(err, errlen, "access log: eventfd: %s", strerror(errno));
        veer_accesslog_free(al);
        return NULL;
    }
    for (; al->ring_count < worker_count; al->ring_count++) {
        veer_alring_t *r = veer_alring_new(ring_bytes);
        if (r == NULL) {
            snprintf(err, errlen, "access log: cannot allocate %zu bytes per worker (access_log.buffer_bytes)",
                     ring_bytes);
            veer_accesslog_free(al);
            return NULL;
        }
        r->kicked = &al->kicked;
        r->kick_fd = al->kick_fd;
        al->rings[al->ring_count] = r;
    }
    if (path != NULL) {
        if ((al->fd = open_sink(path, err, errlen)) < 0 || (al->path = strdup(path)) == NULL ||
            (al->main_path = strdup(path)) == NULL) {
            if (al->fd >= 0)
                snprintf(err, errlen, "access log: out of memory");
            veer_accesslog_free(al);
            return NULL;
        }
        set_enabled(al, true);
    }
    return al;
}

int veer_accesslog_start(veer_accesslog_t *al, char *err, size_t errlen)
{
    int rc = pthread_create(&al->thread, NULL, writer_main, al);
    if (rc != 0) {
        snprintf(err, errlen, "access log: cannot start the writer thread: %s", strerror(rc));
        return -1;
    }
    al->thread_started = true;
    pthread_setname_np(al->thread, "veer-accesslog"); /* 15 chars: what top -H shows */
    return 0;
}

veer_alring_t *veer_accesslog_ring(veer_accesslog_t *al, uint32_t worker)
{
    return worker < al->ring_count ? al->rings[worker] : NULL;
}

static void wake(veer_accesslog_t *al)
{
    uint64_t one = 1;
    ssize_t n = write(al->kick_fd, &one, sizeof(one));
    (void)n;
}

void veer_accesslog_reopen(veer_accesslog_t *al)
{
    atomic_store(&al->reopen, true);
    atomic_store(&al->control, true);
    wake(al);
}

int veer_accesslog_prepare(veer_accesslog_t *al, const char *path, char *err, size_t errlen)
{
    veer_accesslog_abort(al);
    if (same_path(al->main_path, path))
        return 0;
    int fd = -1;
    char *copy = NULL;
    if (path != NULL) {
        if ((fd = open_sink(path, err, errlen)) < 0)
            return -1;
        if ((copy = strdup(path)) == NULL) {
            close(fd);
            snprintf(err, errlen, "access log: out of memory");
            return -1;
        }
    }
    al->prepared = true;
    al->prepared_fd = fd;
    al->prepared_path = copy;
    return 0;
}

void veer_accesslog_commit(veer_accesslog_t *al)
{
    if (!al->prepared)
        return;
    if (al->prepared_fd < 0)
        set_enabled(al, false); /* off: stop recording now; what the rings hold still goes to the old file */
    free(al->main_path);
    al->main_path = al->prepared_path != NULL ? strdup(al->prepared_path) : NULL;
    pthread_mutex_lock(&al->lock);
    if (al->switch_pending) { /* two reloads before the writer woke: the newer wins */
        if (al->switch_fd >= 0)
            close(al->switch_fd);
        free(al->switch_path);
    }
    al->switch_pending = true;
    al->switch_fd = al->prepared_fd; /* the writer owns both from here */
    al->switch_path = al->prepared_path;
    pthread_mutex_unlock(&al->lock);
    al->prepared = false;
    al->prepared_fd = -1;
    al->prepared_path = NULL;
    atomic_store(&al->control, true);
    wake(al);
}

void veer_accesslog_abort(veer_accesslog_t *al)
{
    if (!al->prepared)
        return;
    if (al->prepared_fd >= 0)
        close(al->prepared_fd);
    free(al->prepared_path);
    al->prepared = false;
    al->prepared_fd = -1;
    al->prepared_path = NULL;
}

void veer_accesslog_stop(veer_accesslog_t *al)
{
    if (al == NULL || !al->thread_started)
        return;
    atomic_store(&al->stop, true);
    wake(al);
    pthread_join(al->thread, NULL);
    al->thread_started = false;
    uint64_t lines = 0;
    for (uint32_t i = 0; i < al->ring_count; i++)
        lines += veer_alring_lines(al->rings[i]);
    if (al->path != NULL || lines > 0)
        veer_log_info("access log: closed, %llu lines written, %llu dropped",
                      (unsigned long long)(lines - atomic_load(&al->lost) - al->discarded),
                      (unsigned long long)drops_total(al));
}

void veer_accesslog_free(veer_accesslog_t *al)
{
    if (al == NULL)
        return;
    veer_accesslog_stop(al);
    veer_accesslog_abort(al);
    for (uint32_t i = 0; al->rings != NULL && i < al->ring_count; i++)
        veer_alring_free(al->rings[i]);
    free(al->rings);
    free(al->iov);
    free(al->peeked);
    if (al->fd >= 0)
        close(al->fd);
    if (al->switch_fd >= 0)
        close(al->switch_fd);
    if (al->kick_fd >= 0)
        close(al->kick_fd);
    free(al->path);
    free(al->switch_path);
    free(al->main_path);
    pthread_mutex_destroy(&al->lock);
    free(al);
}

uint64_t veer_accesslog_dropped(veer_accesslog_t *al)
{
    return drops_total(al);
}

/* ---------------------------------------------------------------- exchange */

static uint64_t ts_us(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* "1.2.3.4:5" / "[::1]:5" without snprintf (every request formats one). */
static size_t format_client(const struct sockaddr *sa, char *out, size_t outlen)
{
    if (sa == NULL || (sa->sa_family != AF_INET && sa->sa_family != AF_INET6))
        return 0;
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        out[0] = '[';
        if (inet_ntop(AF_INET6, &in6->sin6_addr, out + 1, (socklen_t)(outlen - 8)) == NULL)
            return 0;
        char *p = out + strlen(out);
        *p++ = ']';
        *p++ = ':';
        p = veer_put_u64(p, ntohs(in6->sin6_port));
        return (size_t)(p - out);
    }
    const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
    const uint8_t *b = (const uint8_t *)&in->sin_addr;
    char *p = out;
    for (int i = 0; i < 4; i++) {
        p = veer_put_u64(p, b[i]);
        *p++ = i < 3 ? '.' : ':';
    }
    p = veer_put_u64(p, ntohs(in->sin_port));
    return (size_t)(p - out);
}

static veer_iov_t iov_cstr(const char *s)
{
    return s != NULL ? (veer_iov_t){s, strlen(s)} : (veer_iov_t){NULL, 0};
}

static uint32_t exchange_flags(const veer_exchange_t *x)
{
    uint32_t flags = x->log_flags;
    if (x->local_reply)
        flags |= VEER_AL_LOCAL;
    if (!x->resp_ended)
        flags |= VEER_AL_INCOMPLETE;
    switch ((veer_fail_t)x->fail) {
    case VEER_FAIL_CONNECT: flags |= VEER_AL_CONNECT_FAIL; break;
    case VEER_FAIL_RESET: flags |= VEER_AL_RESET; break;
    case VEER_FAIL_TIMEOUT: flags |= VEER_AL_TIMEOUT; break;
    case VEER_FAIL_PROTOCOL: flags |= VEER_AL_PROTOCOL; break;
    default: break;
    }
    return flags;
}

void veer_accesslog_record(veer_exchange_t *x)
{
    veer_alring_t *r = x->w->access_log;
    if (r == NULL || !atomic_load_explicit(&r->enabled, memory_order_relaxed))
        return;
    const veer_config_t *cfg = x->ws->snap->config;
    uint64_t now = ts_us(CLOCK_MONOTONIC), end = x->end_us ? x->end_us : now;
    char client[64];
    size_t client_len = format_client(x->client_addr, client, sizeof(client));
    veer_alentry_t e = {
        .time_us = (int64_t)(ts_us(CLOCK_REALTIME) - (now - x->start_us)),
        .request_id = {x->request_id, x->request_id_len},
        .trace_id = x->traceparent[0] ? (veer_iov_t){x->traceparent + 3, 32} : (veer_iov_t){NULL, 0},
        .listener = x->listener >= 0 && (size_t)x->listener < cfg->listener_count
                        ? iov_cstr(cfg->listeners[x->listener].name)
                        : (veer_iov_t){NULL, 0},
        .protocol = x->http_version == 20 ? VEER_IOV_LIT("HTTP/2")
                    : x->req.http10       ? VEER_IOV_LIT("HTTP/1.0")
                                          : VEER_IOV_LIT("HTTP/1.1"),
        .client = client_len ? (veer_iov_t){client, client_len} : (veer_iov_t){NULL, 0},
        .method = x->req.method.len ? x->req.method : (veer_iov_t){NULL, 0},
        .path = x->req.path.len ? x->req.path : (veer_iov_t){NULL, 0},
        .authority = x->req.authority.len ? x->req.authority : (veer_iov_t){NULL, 0},
        .route = x->route >= 0 ? iov_cstr(cfg->routes[x->route].name) : (veer_iov_t){NULL, 0},
        .cluster = x->cluster >= 0 ? iov_cstr(cfg->clusters[x->cluster].name) : (veer_iov_t){NULL, 0},
        .endpoint = x->served_by != NULL ? iov_cstr(x->served_by->name) : (veer_iov_t){NULL, 0},
        .status = x->resp_head_sent ? x->resp.status : 0,
        .bytes_in = x->req_body_bytes,
        .bytes_out = x->resp_body_bytes,
        .duration_us = end > x->start_us ? end - x->start_us : 0,
        .upstream_us = x->up_head_us && x->up_start_us ? (int64_t)(x->up_head_us - x->up_start_us) : -1,
        .attempts = x->up_start_us ? 1u + x->retried : 0,
        .flags = exchange_flags(x),
    };
    size_t len = veer_accesslog_format(r->scratch, sizeof(r->scratch), &e, &r->time);
    veer_alring_put(r, r->scratch, len);
}
