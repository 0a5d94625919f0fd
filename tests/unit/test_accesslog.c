/* test_accesslog.c - the access log line (every field, escaping, nulls,
 * truncation, time and duration formats), the per-worker ring (full ring
 * drops and counts, wrap-around, a producer and a consumer thread racing),
 * and the writer (lines reach the file, SIGUSR1-style reopen after a rename,
 * a reload switching files or turning the log off, a FIFO with no reader
 * refused, a stuck FIFO at exit counted as dropped). */
#include "accesslog.h"

#include <cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

static const char *str_of(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static double num_of(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : -12345;
}

static bool has_flag(const cJSON *o, const char *flag)
{
    const cJSON *item;
    cJSON_ArrayForEach(item, cJSON_GetObjectItemCaseSensitive(o, "flags"))
        if (cJSON_IsString(item) && strcmp(item->valuestring, flag) == 0)
            return true;
    return false;
}

static veer_alentry_t full_entry(void)
{
    return (veer_alentry_t){
        .time_us = 1795447338123456LL, /* 2026-11-23T15:22:18.123456Z */
        .request_id = iov_str("req-1"),
        .trace_id = iov_str("4bf92f3577b34da6a3ce929d0e0e4736"),
        .listener = iov_str("http"),
        .protocol = iov_str("HTTP/1.1"),
        .client = iov_str("127.0.0.1:54321"),
        .method = iov_str("POST"),
        .path = iov_str("/api/v1/embed?x=1&y=\"2\""),
        .authority = iov_str("embed.local:8080"),
        .route = iov_str("embed"),
        .cluster = iov_str("blue"),
        .endpoint = iov_str("10.0.0.7:8080"),
        .status = 200,
        .bytes_in = 45,
        .bytes_out = 6789,
        .duration_us = 12345,
        .upstream_us = 9007,
        .attempts = 2,
        .flags = VEER_AL_RESET | VEER_AL_LOCAL,
    };
}

static void test_format_fields(void)
{
    char line[VEER_ACCESSLOG_LINE_MAX];
    veer_altime_t cache = {0};
    veer_alentry_t e = full_entry();
    size_t n = veer_accesslog_format(line, sizeof(line), &e, &cache);
    CHECK(n > 0 && n < sizeof(line));
    CHECK(line[n - 1] == '\n' && memchr(line, '\n', n - 1) == NULL);
    cJSON *o = cJSON_ParseWithLength(line, n);
    CHECK(o != NULL);
    CHECK(str_of(o, "time") && strcmp(str_of(o, "time"), "2026-11-23T15:22:18.123Z") == 0);
    CHECK(str_of(o, "request_id") && strcmp(str_of(o, "request_id"), "req-1") == 0);
    CHECK(str_of(o, "trace_id") && strcmp(str_of(o, "trace_id"), "4bf92f3577b34da6a3ce929d0e0e4736") == 0);
    CHECK(str_of(o, "listener") && strcmp(str_of(o, "listener"), "http") == 0);
    CHECK(str_of(o, "protocol") && strcmp(str_of(o, "protocol"), "HTTP/1.1") == 0);
    CHECK(str_of(o, "client") && strcmp(str_of(o, "client"), "127.0.0.1:54321") == 0);
    CHECK(str_of(o, "method") && strcmp(str_of(o, "method"), "POST") == 0);
    CHECK(str_of(o, "path") && strcmp(str_of(o, "path"), "/api/v1/embed?x=1&y=\"2\"") == 0);
    CHECK(str_of(o, "authority") && strcmp(str_of(o, "authority"), "embed.local:8080") == 0);
    CHECK(str_of(o, "route") && strcmp(str_of(o, "route"), "embed") == 0);
    CHECK(str_of(o, "cluster") && strcmp(str_of(o, "cluster"), "blue") == 0);
    CHECK(str_of(o, "endpoint") && strcmp(str_of(o, "endpoint"), "10.0.0.7:8080") == 0);
    CHECK(num_of(o, "status") == 200);
    CHECK(num_of(o, "bytes_in") == 45);
    CHECK(num_of(o, "bytes_out") == 6789);
    CHECK(num_of(o, "attempts") == 2);
    /* µs precision as text: exact decimals, not a float's approximation */
    CHECK(strstr(line, "\"duration_ms\":12.345,") != NULL);
    CHECK(strstr(line, "\"upstream_ms\":9.007,") != NULL);
    CHECK(has_flag(o, "local") && has_flag(o, "reset") && !has_flag(o, "timeout"));
    CHECK(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(o, "flags")) == 2);
    cJSON_Delete(o);

    /* the second is cached: a later ms of the same second, then the next second */
    e.time_us += 800000;
    n = veer_accesslog_format(line, sizeof(line), &e, &cache);
    CHECK(strncmp(line, "{\"time\":\"2026-11-23T15:22:18.923Z\"", 34) == 0);
    e.time_us += 100000;
    n = veer_accesslog_format(line, sizeof(line), &e, &cache);
    CHECK(strncmp(line, "{\"time\":\"2026-11-23T15:22:19.023Z\"", 34) == 0);
    /* a buffer below the line maximum is refused, not overrun */
    CHECK(veer_accesslog_format(line, VEER_ACCESSLOG_LINE_MAX - 1, &e, &cache) == 0);
}

static void test_format_nulls(void)
{
    char line[VEER_ACCESSLOG_LINE_MAX];
    veer_altime_t cache = {0};
    /* a 400 on a garbage head: no route, cluster, endpoint, trace or upstream */
    veer_alentry_t e = {.time_us = 1795447338000000LL, .request_id = iov_str("abc"), .status = 400,
                        .upstream_us = -1, .flags = VEER_AL_LOCAL, .duration_us = 7};
    size_t n = veer_accesslog_format(line, sizeof(line), &e, &cache);
    cJSON *o = cJSON_ParseWithLength(line, n);
    CHECK(o != NULL);
    static const char *const nulls[] = {"trace_id", "listener", "protocol", "client", "method", "path",
                                        "authority", "route", "cluster", "endpoint", "upstream_ms"};
    for (size_t i = 0; i < sizeof(nulls) / sizeof(nulls[0]); i++)
        CHECK(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(o, nulls[i])));
    CHECK(num_of(o, "status") == 400 && num_of(o, "attempts") == 0);
    CHECK(strstr(line, "\"duration_ms\":0.007,") != NULL);
    cJSON_Delete(o);
}

static void test_format_escaping(void)
{
    char line[VEER_ACCESSLOG_LINE_MAX];
    veer_altime_t cache = {0};
    veer_alentry_t e = full_entry();
    static const char raw[] = "/a\"b\\c\x01\x1f\x7f\xc3\xa9\n";
    e.path = (veer_iov_t){raw, sizeof(raw) - 1};
    e.authority = (veer_iov_t){"h\0st", 4};
    size_t n = veer_accesslog_format(line, sizeof(line), &e, &cache);
    /* the line is ASCII: bytes above 0x7e are \u00XX */
    bool ascii = true;
    for (size_t i = 0; i < n; i++)
        ascii &= (unsigned char)line[i] < 0x80 && (line[i] >= 0x20 || line[i] == '\n');
    CHECK(ascii);
    CHECK(strstr(line, "\"path\":\"/a\\\"b\\\\c\\u0001\\u001f\\u007f\\u00c3\\u00a9\\u000a\"") != NULL);
    cJSON *o = cJSON_ParseWithLength(line, n);
    CHECK(o != NULL);
    CHECK(str_of(o, "path") != NULL && strncmp(str_of(o, "path"), "/a\"b\\c\x01\x1f\x7f", 9) == 0);
    CHECK(!has_flag(o, "truncated"));
    cJSON_Delete(o);
}

static void test_format_truncation(void)
{
    char line[VEER_ACCESSLOG_LINE_MAX];
    veer_altime_t cache = {0};
    veer_alentry_t e = full_entry();
    /* worst case everywhere: every byte needs six */
    static char huge[100000];
    memset(huge, 0x01, sizeof(huge));
    e.path = e.authority = e.method = e.route = e.cluster = e.listener = e.request_id = e.client = e.endpoint =
        e.trace_id = e.protocol = (veer_iov_t){huge, sizeof(huge)};
    size_t n = veer_accesslog_format(line, sizeof(line), &e, &cache);
    CHECK(n > 0 && n <= sizeof(line));
    cJSON *o = cJSON_ParseWithLength(line, n);
    CHECK(o != NULL);
    CHECK(has_flag(o, "truncated"));
    cJSON_Delete(o);
    /* a long plain path keeps its first 4096 bytes */
    memset(huge, 'p', sizeof(huge));
    e = full_entry();
    e.path = (veer_iov_t){huge, 5000};
    n = veer_accesslog_format(line, sizeof(line), &e, &cache);
    o = cJSON_ParseWithLength(line, n);
    CHECK(o != NULL && str_of(o, "path") != NULL && strlen(str_of(o, "path")) == 4096 && has_flag(o, "truncated"));
    cJSON_Delete(o);
}

/* The bytes the ring would write next, as one string. */
static size_t ring_text(veer_alring_t *r, char *out, size_t cap)
{
    struct iovec iov[2];
    size_t n = veer_alring_peek(r, iov);
    if (n >= cap)
        return 0;
    memcpy(out, iov[0].iov_base, iov[0].iov_len);
    memcpy(out + iov[0].iov_len, iov[1].iov_base, iov[1].iov_len);
    out[n] = '\0';
    return n;
}

static void test_ring_full_and_wrap(void)
{
    CHECK(veer_alring_new(VEER_ACCESSLOG_LINE_MAX - 1) == NULL);
    veer_alring_t *r = veer_alring_new(VEER_ACCESSLOG_LINE_MAX);
    CHECK(r != NULL);
    char line[1000];
    memset(line, 'a', sizeof(line));
    line[sizeof(line) - 1] = '\n';
    int put = 0;
    for (int i = 0; i < 20; i++)
        put += veer_alring_put(r, line, sizeof(line));
    CHECK(put == 8); /* 8 x 1000 fit in 8192, the 9th does not */
    CHECK(veer_alring_dropped(r) == 12 && veer_alring_lines(r) == 8);
    struct iovec iov[2];
    CHECK(veer_alring_peek(r, iov) == 8000 && iov[0].iov_len == 8000 && iov[1].iov_len == 0);
    /* the writer takes 2.5 lines (a partial write); room for 2 more lines wraps */
    veer_alring_consume(r, 2500);
    char small[600];
    memset(small, 'b', sizeof(small));
    small[sizeof(small) - 1] = '\n';
    CHECK(veer_alring_put(r, small, sizeof(small))); /* 8000..8599: wraps at 8192 */
    CHECK(veer_alring_put(r, line, sizeof(line)));
    CHECK(veer_alring_peek(r, iov) == 5500 + 600 + 1000);
    CHECK(iov[0].iov_len == 8192 - 2500 && iov[1].iov_len == 7100 - (8192 - 2500));
    static char text[16384];
    size_t n = ring_text(r, text, sizeof(text));
    CHECK(n == 7100);
    CHECK(text[499] == '\n' && text[5499] == '\n' && text[5500] == 'b' && text[6099] == '\n' && text[6100] == 'a');
    CHECK(text[7099] == '\n');
    veer_alring_consume(r, n);
    CHECK(veer_alring_peek(r, iov) == 0);
    /* whole lines only: a line that does not fit is refused whole */
    CHECK(veer_alring_put(r, text, 8192));
    CHECK(!veer_alring_put(r, "x\n", 2));
    CHECK(veer_alring_dropped(r) == 13);
    veer_alring_free(r);
}

typedef struct race_s {
    veer_alring_t *r;
    int lines;
    atomic_bool done;
} race_t;

static void *race_producer(void *arg)
{
    race_t *rc = arg;
    char line[64];
    for (int i = 0; i < rc->lines; i++) {
        int n = snprintf(line, sizeof(line), "%d %.*s\n", i, i % 40, "0123456789012345678901234567890123456789");
        veer_alring_put(rc->r, line, (size_t)n);
    }
    atomic_store(&rc->done, true);
    return NULL;
}

/* A producer and a consumer on two threads: what comes out is the lines put,
 * each whole, in order, and put + dropped = attempted. */
static void test_ring_threads(void)
{
    race_t rc = {.r = veer_alring_new(16384), .lines = 200000};
    pthread_t t;
    pthread_create(&t, NULL, race_producer, &rc);
    static char buf[16384 + 1];
    char carry[128];
    size_t carry_len = 0;
    long expect_min = -1, received = 0;
    bool ordered = true, whole = true;
    for (;;) {
        bool done = atomic_load(&rc.done);
        struct iovec iov[2];
        size_t n = veer_alring_peek(rc.r, iov);
        /* consume in odd-sized pieces, as partial writes would */
        size_t take = n > 777 ? 777 : n;
        size_t a = take < iov[0].iov_len ? take : iov[0].iov_len;
        memcpy(buf, iov[0].iov_base, a);
        memcpy(buf + a, iov[1].iov_base, take - a);
        veer_alring_consume(rc.r, take);
        for (size_t i = 0; i < take; i++) {
            if (carry_len < sizeof(carry))
                carry[carry_len++] = buf[i];
            if (buf[i] != '\n')
                continue;
            long num;
            int width;
            carry[carry_len - 1] = '\0';
            if (sscanf(carry, "%ld %n", &num, &width) != 1 || (int)strlen(carry + width) != (int)(num % 40))
                whole = false;
            if (num <= expect_min)
                ordered = false;
            expect_min = num;
            received++;
            carry_len = 0;
        }
        if (done && n == 0)
            break;
    }
    pthread_join(t, NULL);
    CHECK(ordered && whole);
    CHECK(carry_len == 0);
    CHECK((uint64_t)received == veer_alring_lines(rc.r));
    CHECK(veer_alring_lines(rc.r) + veer_alring_dropped(rc.r) == (uint64_t)rc.lines);
    veer_alring_free(rc.r);
}

/* ---- the writer ---- */

static char dir[] = "/tmp/veer-test-accesslog-XXXXXX";

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    static char buf[1 << 20];
    *len = fread(buf, 1, sizeof(buf) - 1, f);
    buf[*len] = '\0';
    fclose(f);
    return buf;
}

static size_t count_char(const char *s, size_t n, char c)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += s[i] == c;
    return k;
}

static void put_lines(veer_accesslog_t *al, uint32_t worker, const char *tag, int count)
{
    char line[128];
    for (int i = 0; i < count; i++) {
        int n = snprintf(line, sizeof(line), "{\"tag\":\"%s\",\"i\":%d}\n", tag, i);
        veer_alring_put(veer_accesslog_ring(al, worker), line, (size_t)n);
    }
}

static size_t lines_in(const char *path, const char *tag)
{
    size_t len;
    char *text = read_file(path, &len);
    if (text == NULL)
        return 0;
    char needle[64];
    snprintf(needle, sizeof(needle), "\"tag\":\"%s\"", tag);
    size_t k = 0;
    for (char *p = text; (p = strstr(p, needle)) != NULL; p++)
        k++;
    return k;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

/* Wait for the writer (it ticks every 100 ms). */
static bool wait_lines(const char *path, const char *tag, size_t want)
{
    for (int i = 0; i < 300; i++) {
        if (lines_in(path, tag) >= want)
            return lines_in(path, tag) == want;
        sleep_ms(10);
    }
    return false;
}

static void test_writer_file_reopen_switch(void)
{
    char path[256], rotated[256], other[256], err[512] = "";
    snprintf(path, sizeof(path), "%s/access.log", dir);
    snprintf(rotated, sizeof(rotated), "%s/access.log.1", dir);
    snprintf(other, sizeof(other), "%s/other.log", dir);

    veer_accesslog_t *al = veer_accesslog_new(2, 65536, path, err, sizeof(err));
    CHECK(al != NULL);
    if (al == NULL)
        return;
    struct stat st;
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0640); /* umask 022 */
    CHECK(veer_accesslog_start(al, err, sizeof(err)) == 0);
    put_lines(al, 0, "a", 100);
    put_lines(al, 1, "b", 50);
    CHECK(wait_lines(path, "a", 100) && wait_lines(path, "b", 50));

    /* logrotate: rename, then SIGUSR1 -> reopen; nothing lost, new lines in the new file */
    CHECK(rename(path, rotated) == 0);
    put_lines(al, 0, "c", 10); /* may land in either file */
    veer_accesslog_reopen(al);
    for (int i = 0; i < 300 && stat(path, &st) != 0; i++)
        sleep_ms(10);
    CHECK(stat(path, &st) == 0);
    put_lines(al, 1, "d", 20);
    CHECK(wait_lines(path, "d", 20));
    CHECK(lines_in(rotated, "d") == 0 && lines_in(rotated, "a") == 100);
    /* what the rings held at the reopen went to the old file first */
    CHECK(lines_in(rotated, "c") == 10 && lines_in(path, "c") == 0);

    /* a reload to another path: prepare opens it, commit switches */
    CHECK(veer_accesslog_prepare(al, path, err, sizeof(err)) == 0); /* same path: nothing to do */
    veer_accesslog_commit(al);
    CHECK(veer_accesslog_prepare(al, other, err, sizeof(err)) == 0);
    put_lines(al, 0, "e", 5);                                       /* before commit: old file */
    CHECK(wait_lines(path, "e", 5));
    veer_accesslog_commit(al);
    put_lines(al, 0, "f", 5); /* around the switch: either file, none lost */
    sleep_ms(300);           /* the commit wakes the writer at once */
    CHECK(lines_in(path, "f") + lines_in(other, "f") == 5);
    put_lines(al, 1, "f2", 5);
    CHECK(wait_lines(other, "f2", 5) && lines_in(path, "f2") == 0);

    /* a path that cannot be opened fails prepare with the reason, and nothing changes */
    char bad[300];
    snprintf(bad, sizeof(bad), "%s/no/such/dir/x.log", dir);
    CHECK(veer_accesslog_prepare(al, bad, err, sizeof(err)) == -1);
    CHECK(strstr(err, "access_log.path: cannot open") != NULL && strstr(err, "No such file") != NULL);
    put_lines(al, 1, "g", 3);
    CHECK(wait_lines(other, "g", 3));

    /* off, then stop: everything recorded so far was written, nothing dropped */
    CHECK(veer_accesslog_prepare(al, NULL, err, sizeof(err)) == 0);
    veer_accesslog_commit(al);
    veer_accesslog_stop(al);
    CHECK(lines_in(other, "g") == 3);
    CHECK(veer_accesslog_dropped(al) == 0);
    veer_accesslog_free(al);
    unlink(path);
    unlink(rotated);
    unlink(other);
}

static void test_writer_fifo(void)
{
    char fifo[256], err[512] = "";
    snprintf(fifo, sizeof(fifo), "%s/fifo", dir);
    CHECK(mkfifo(fifo, 0600) == 0);
    /* nobody reads: refused at once, with a reason a user understands */
    CHECK(veer_accesslog_new(1, 16384, fifo, err, sizeof(err)) == NULL);
    CHECK(strstr(err, "a FIFO with no reader") != NULL);

    /* a reader that never reads: the pipe fills, the ring fills, lines are
     * dropped and counted, put never blocks; at exit the writer gives up
     * after its wait and counts what was left */
    int rd = open(fifo, O_RDONLY | O_NONBLOCK);
    veer_accesslog_t *al = veer_accesslog_new(1, 16384, fifo, err, sizeof(err));
    CHECK(al != NULL && rd >= 0);
    if (al == NULL)
        return;
    CHECK(veer_accesslog_start(al, err, sizeof(err)) == 0);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    put_lines(al, 0, "z", 100000); /* ~2.3 MB against a 64 KiB pipe */
    clock_gettime(CLOCK_MONOTONIC, &t1);
    CHECK(t1.tv_sec - t0.tv_sec < 5); /* never waits on the writer */
    uint64_t dropped = veer_accesslog_dropped(al);
    CHECK(dropped > 90000);
    veer_accesslog_stop(al);
    uint64_t total_dropped = veer_accesslog_dropped(al);
    CHECK(total_dropped > dropped); /* what sat in the ring at exit */
    /* what the pipe holds + every drop = every line put */
    static char buf[1 << 20];
    size_t got = 0;
    ssize_t n;
    while ((n = read(rd, buf + got, sizeof(buf) - got)) > 0)
        got += (size_t)n;
    CHECK(count_char(buf, got, '\n') + total_dropped == 100000);
    close(rd);
    veer_accesslog_free(al);
    unlink(fifo);
}

int main(void)
{
    umask(022);
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    test_format_fields();
    test_format_nulls();
    test_format_escaping();
    test_format_truncation();
    test_ring_full_and_wrap();
    test_ring_threads();
    test_writer_file_reopen_switch();
    test_writer_fifo();
    rmdir(dir);
    return check_summary("test_accesslog");
}
