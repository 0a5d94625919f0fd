/* accesslog.h - one JSON line per request, written off the request path.
 * Each worker formats its lines into its own bounded ring (single producer,
 * single consumer: no lock, no allocation per line); when a ring is full the
 * line is dropped and counted, the worker never waits. One writer thread
 * drains every ring to the file with writev(2) in batches, reopens it on
 * SIGUSR1 (logrotate), switches files on a reload, and at exit writes every
 * line still in a ring before veer exits.
 *
 * Threads: veer_accesslog_record() runs on a worker (its own ring only); the
 * lifecycle calls (new, start, reopen, prepare/commit/abort, stop, free) run on
 * the main thread; the rest of the work happens on the writer thread. */
#ifndef VEER_ACCESSLOG_H
#define VEER_ACCESSLOG_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "http.h"

struct veer_exchange_s;

typedef struct veer_accesslog_s veer_accesslog_t;
typedef struct veer_alring_s veer_alring_t;

/* Longest line: longer fields are cut (and the line flagged "truncated"). */
#define VEER_ACCESSLOG_LINE_MAX 8192
/* At exit, how long the writer may wait for a sink that does not take bytes
 * (a FIFO nobody reads) before the lines left are counted as dropped. */
#define VEER_ACCESSLOG_EXIT_WAIT_MS 2000

/* Flags of a line ("flags": [...]): what went wrong or was special. */
enum {
    VEER_AL_LOCAL = 1u << 0,        /* "local": veer answered itself (local reply) */
    VEER_AL_TIMEOUT = 1u << 1,      /* "timeout": the route timeout fired */
    VEER_AL_OVERFLOW = 1u << 2,     /* "overflow": a circuit breaker refused the request */
    VEER_AL_RESET = 1u << 3,        /* "reset": the upstream closed or reset mid-exchange */
    VEER_AL_CONNECT_FAIL = 1u << 4, /* "connect_fail": no connection to the endpoint */
    VEER_AL_PROTOCOL = 1u << 5,     /* "upstream_protocol": the upstream sent an invalid response */
    VEER_AL_INCOMPLETE = 1u << 6,   /* "incomplete": the response did not finish (client gone, cut at drain) */
    VEER_AL_TRUNCATED = 1u << 7,    /* "truncated": a field of this line was cut to fit */
};

/* The fields of one line. Strings are byte ranges; base NULL means JSON null. */
typedef struct veer_alentry_s {
    int64_t time_us;                /* wall clock at the request's first byte, µs since the epoch */
    veer_iov_t request_id, trace_id, listener, protocol, client, method, path, authority, route, cluster, endpoint;
    int status;                     /* 0: no response was sent */
    uint64_t bytes_in, bytes_out;   /* request body, response body */
    uint64_t duration_us;           /* first request byte to last response byte */
    int64_t upstream_us;            /* first upstream attempt to the response head; -1: none */
    uint32_t attempts;              /* upstream attempts; 0: never went upstream */
    uint32_t flags;                 /* VEER_AL_* */
} veer_alentry_t;

/* "YYYY-MM-DDTHH:MM:SS" of the last second formatted, per producer. */
typedef struct veer_altime_s {
    int64_t sec;
    char text[32];
} veer_altime_t;

/* Format e as one JSON object and a newline into out (cap must be at least
 * VEER_ACCESSLOG_LINE_MAX). Returns the length. Bytes outside printable ASCII
 * are escaped as \u00XX, so a line is valid JSON whatever the client sent. */
size_t veer_accesslog_format(char *out, size_t cap, const veer_alentry_t *e, veer_altime_t *cache);

/* ---- the per-worker ring ---- */

veer_alring_t *veer_alring_new(size_t cap);
void veer_alring_free(veer_alring_t *r);
/* Producer: append one whole line, or count it as dropped when it does not
 * fit. Returns true when appended. */
bool veer_alring_put(veer_alring_t *r, const char *line, size_t len);
/* Consumer: the bytes ready to write as at most two ranges; returns the total. */
size_t veer_alring_peek(veer_alring_t *r, struct iovec iov[2]);
/* Consumer: n bytes of what peek showed were written. */
void veer_alring_consume(veer_alring_t *r, size_t n);
uint64_t veer_alring_dropped(const veer_alring_t *r);
uint64_t veer_alring_lines(const veer_alring_t *r); /* lines appended */

/* ---- the writer ---- */

/* path: a file (opened for append, created 0640), "-" for stdout, or NULL
 * for none. NULL with err when the file cannot be opened. */
veer_accesslog_t *veer_accesslog_new(uint32_t worker_count, size_t ring_bytes, const char *path, char *err,
                                     size_t errlen);
int veer_accesslog_start(veer_accesslog_t *al, char *err, size_t errlen);
veer_alring_t *veer_accesslog_ring(veer_accesslog_t *al, uint32_t worker);
/* SIGUSR1: write what the rings hold to the current file, then open the path
 * again (the old name may have been renamed away). */
void veer_accesslog_reopen(veer_accesslog_t *al);
/* Reload in two steps, so that a path that cannot be opened fails the reload
 * before anything changes: prepare opens the new path when it differs from
 * the current one (0, or -1 with err); commit switches to it once the rest of
 * the reload went through; abort forgets it. */
int veer_accesslog_prepare(veer_accesslog_t *al, const char *path, char *err, size_t errlen);
void veer_accesslog_commit(veer_accesslog_t *al);
void veer_accesslog_abort(veer_accesslog_t *al);
/* After the workers have stopped: write every line left, stop the thread and
 * log the totals. */
void veer_accesslog_stop(veer_accesslog_t *al);
void veer_accesslog_free(veer_accesslog_t *al);
/* Lines dropped so far (rings full, or lost at exit), over all workers. */
uint64_t veer_accesslog_dropped(veer_accesslog_t *al);

/* On a worker, when an exchange ends: its line into the worker's ring. */
void veer_accesslog_record(struct veer_exchange_s *x);

#endif
