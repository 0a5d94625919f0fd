/* prom.c - Prometheus text format 0.0.4 (prom.h). Lines are assembled by
 * hand (no printf per line): a scrape of 50 routes x 3 clusters writes about
 * 17,000 histogram lines, and the label text of a series is escaped once and
 * reused for every one of its lines. */

#include "prom.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MIN_CAP 4096
#define SECONDS_LEN 32

/* Generated: 100us, 500us, round(1ms * 1.092^k) to 4 significant digits
 * for k = 0..105, 30s, 100s. */
const uint64_t veer_prom_default_buckets_us[] = {
    100, 500, 1000, 1092, 1192, 1302, 1422, 1553, 1696, 1852, 2022, 2208, 2411, 2633, 2875, 3140, 3429, 3744,
    4088, 4465, 4875, 5324, 5814, 6349, 6933, 7570, 8267, 9027, 9858, 10760, 11760, 12840, 14020, 15310, 16720,
    18250, 19930, 21770, 23770, 25960, 28340, 30950, 33800, 36910, 40300, 44010, 48060, 52480, 57310, 62580,
    68340, 74630, 81500, 88990, 97180, 106100, 115900, 126500, 138200, 150900, 164800, 179900, 196500, 214600,
    234300, 255900, 279400, 305100, 333200, 363800, 397300, 433900, 473800, 517400, 565000, 617000, 673700,
    735700, 803400, 877300, 958000, 1046000, 1142000, 1247000, 1362000, 1488000, 1624000, 1774000, 1937000,
    2115000, 2310000, 2522000, 2754000, 3008000, 3285000, 3587000, 3917000, 4277000, 4671000, 5100000, 5570000,
    6082000, 6641000, 7252000, 7920000, 8648000, 9444000, 10310000, 30000000, 100000000,
};
const size_t veer_prom_default_bucket_count = sizeof veer_prom_default_buckets_us / sizeof(uint64_t);

/* ---- the buffer ---------------------------------------------------------- */

void veer_prom_buf_init(veer_prom_buf_t *b, size_t max_bytes)
{
    memset(b, 0, sizeof *b);
    b->max = max_bytes;
}

void veer_prom_buf_free(veer_prom_buf_t *b)
{
    free(b->data);
    memset(b, 0, sizeof *b);
}

int veer_prom_buf_status(const veer_prom_buf_t *b)
{
    return b->overflow ? -1 : 0;
}

static bool reserve(veer_prom_buf_t *b, size_t more)
{
    if (b->overflow)
        return false;
    if (more > b->max - b->len) {
        b->overflow = true;
        return false;
    }
    size_t need = b->len + more;
    if (need <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : MIN_CAP;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    if (cap > b->max)
        cap = b->max;
    char *data = realloc(b->data, cap);
    if (!data) {
        b->overflow = true;
        return false;
    }
    b->data = data;
    b->cap = cap;
    return true;
}

void veer_prom_append(veer_prom_buf_t *b, const char *text, size_t len)
{
    if (len && reserve(b, len)) {
        memcpy(b->data + b->len, text, len);
        b->len += len;
    }
}

static void append_str(veer_prom_buf_t *b, const char *s)
{
    veer_prom_append(b, s, strlen(s));
}

static size_t format_u64(char *out, uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    return n;
}

static void append_u64(veer_prom_buf_t *b, uint64_t v)
{
    char text[20];
    veer_prom_append(b, text, format_u64(text, v));
}

size_t veer_prom_format_seconds(char *out, uint64_t us)
{
    size_t n = format_u64(out, us / 1000000);
    uint64_t frac = us % 1000000;
    if (frac) {
        out[n++] = '.';
        char digits[6];
        for (int i = 5; i >= 0; i--) {
            digits[i] = (char)('0' + frac % 10);
            frac /= 10;
        }
        size_t keep = 6;
        while (digits[keep - 1] == '0')
            keep--;
        memcpy(out + n, digits, keep);
        n += keep;
    }
    out[n] = '\0';
    return n;
}

/* Label values: backslash, double quote and line feed escaped (0.0.4). */
static void append_escaped(veer_prom_buf_t *b, const char *s, bool quote)
{
    const char *run = s;
    for (; *s; s++) {
        const char *esc = *s == '\\' ? "\\\\" : *s == '\n' ? "\\n" : (quote && *s == '"') ? "\\\"" : NULL;
        if (!esc)
            continue;
        veer_prom_append(b, run, (size_t)(s - run));
        veer_prom_append(b, esc, 2);
        run = s + 1;
    }
    veer_prom_append(b, run, (size_t)(s - run));
}

/* `a="x",b="y"` (no braces) into b. */
static void append_labels(veer_prom_buf_t *b, const veer_prom_label_t *labels, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (i)
            veer_prom_append(b, ",", 1);
        append_str(b, labels[i].name);
        veer_prom_append(b, "=\"", 2);
        append_escaped(b, labels[i].value ? labels[i].value : "", true);
        veer_prom_append(b, "\"", 1);
    }
}

/* ---- families and samples ------------------------------------------------ */

void veer_prom_family(veer_prom_buf_t *b, const char *name, const char *type, const char *help)
{
    veer_prom_append(b, "# HELP ", 7);
    append_str(b, name);
    veer_prom_append(b, " ", 1);
    append_escaped(b, help, false);
    veer_prom_append(b, "\n# TYPE ", 8);
    append_str(b, name);
    veer_prom_append(b, " ", 1);
    append_str(b, type);
    veer_prom_append(b, "\n", 1);
}

/* name{labels} with labels already rendered (may be empty). */
static void append_series(veer_prom_buf_t *b, const char *name, const char *suffix, const char *labels,
                          size_t labels_len)
{
    append_str(b, name);
    append_str(b, suffix);
    if (labels_len) {
        veer_prom_append(b, "{", 1);
        veer_prom_append(b, labels, labels_len);
        veer_prom_append(b, "}", 1);
    }
}

static void sample_u64(veer_prom_buf_t *b, const char *name, const char *labels, size_t labels_len, uint64_t v)
{
    append_series(b, name, "", labels, labels_len);
    veer_prom_append(b, " ", 1);
    append_u64(b, v);
    veer_prom_append(b, "\n", 1);
}

static void render_labels(veer_prom_buf_t *scratch, const veer_prom_label_t *labels, size_t n)
{
    scratch->len = 0;
    scratch->overflow = false;
    append_labels(scratch, labels, n);
}

void veer_prom_sample_u64(veer_prom_buf_t *b, const char *name, const veer_prom_label_t *labels, size_t n,
                          uint64_t value)
{
    veer_prom_buf_t lb;
    veer_prom_buf_init(&lb, b->max);
    render_labels(&lb, labels, n);
    if (lb.overflow)
        b->overflow = true;
    else
        sample_u64(b, name, lb.data, lb.len, value);
    veer_prom_buf_free(&lb);
}

void veer_prom_sample_double(veer_prom_buf_t *b, const char *name, const veer_prom_label_t *labels, size_t n,
                             double value)
{
    veer_prom_buf_t lb;
    veer_prom_buf_init(&lb, b->max);
    render_labels(&lb, labels, n);
    if (lb.overflow) {
        b->overflow = true;
    } else {
        char text[40];
        if (isnan(value))
            snprintf(text, sizeof text, "NaN");
        else if (isinf(value))
            snprintf(text, sizeof text, "%s", value > 0 ? "+Inf" : "-Inf");
        else
            for (int digits = 15; digits <= 17; digits++) { /* the shortest text that reads back the same */
                snprintf(text, sizeof text, "%.*g", digits, value);
                if (strtod(text, NULL) == value)
                    break;
            }
        append_series(b, name, "", lb.data, lb.len);
        veer_prom_append(b, " ", 1);
        append_str(b, text);
        veer_prom_append(b, "\n", 1);
    }
    veer_prom_buf_free(&lb);
}

/* The le="..." texts of a bucket list, computed once per family. */
typedef struct le_texts_s {
    const uint64_t *les;
    size_t n;
    char (*text)[SECONDS_LEN];
    uint8_t *len;
} le_texts_t;

static bool le_texts_init(le_texts_t *t, const uint64_t *les, size_t n)
{
    if (!les) {
        les = veer_prom_default_buckets_us;
        n = veer_prom_default_bucket_count;
    }
    memset(t, 0, sizeof *t);
    if (n > VEER_PROM_MAX_BUCKETS)
        return false;
    t->les = les;
    t->n = n;
    t->text = malloc((n ? n : 1) * sizeof *t->text);
    t->len = malloc(n ? n : 1);
    if (!t->text || !t->len)
        return false;
    for (size_t i = 0; i < n; i++)
        t->len[i] = (uint8_t)veer_prom_format_seconds(t->text[i], les[i]);
    return true;
}

static void le_texts_free(le_texts_t *t)
{
    free(t->text);
    free(t->len);
}

static void bucket_line(veer_prom_buf_t *b, const char *name, const char *labels, size_t labels_len,
                        const char *le, size_t le_len, uint64_t count)
{
    /* One reservation per line: the common case copies without checks. */
    size_t name_len = strlen(name);
    size_t need = name_len + 8 + 1 + labels_len + 1 + 5 + le_len + 3 + 20 + 1;
    if (!reserve(b, need))
        return;
    char *p = b->data + b->len;
    memcpy(p, name, name_len);
    p += name_len;
    memcpy(p, "_bucket{", 8);
    p += 8;
    if (labels_len) {
        memcpy(p, labels, labels_len);
        p += labels_len;
        *p++ = ',';
    }
    memcpy(p, "le=\"", 4);
    p += 4;
    memcpy(p, le, le_len);
    p += le_len;
    memcpy(p, "\"} ", 3);
    p += 3;
    p += format_u64(p, count);
    *p++ = '\n';
    b->len = (size_t)(p - b->data);
}

static void write_histogram(veer_prom_buf_t *b, const char *name, const char *labels, size_t labels_len,
                            const veer_hist_t *h, const le_texts_t *t, uint64_t *cumulative)
{
    veer_hist_cumulative(h, t->les, t->n, cumulative);
    for (size_t i = 0; i < t->n; i++)
        bucket_line(b, name, labels, labels_len, t->text[i], t->len[i], cumulative[i]);
    bucket_line(b, name, labels, labels_len, "+Inf", 4, h->count);
    char sum[SECONDS_LEN];
    size_t sum_len = veer_prom_format_seconds(sum, h->sum);
    append_series(b, name, "_sum", labels, labels_len);
    veer_prom_append(b, " ", 1);
    veer_prom_append(b, sum, sum_len);
    veer_prom_append(b, "\n", 1);
    append_series(b, name, "_count", labels, labels_len);
    veer_prom_append(b, " ", 1);
    append_u64(b, h->count);
    veer_prom_append(b, "\n", 1);
}

void veer_prom_histogram(veer_prom_buf_t *b, const char *name, const veer_prom_label_t *labels, size_t n,
                         const veer_hist_t *h, const uint64_t *les_us, size_t nle)
{
    le_texts_t t = {0};
    veer_prom_buf_t lb;
    veer_prom_buf_init(&lb, b->max);
    uint64_t cumulative[VEER_PROM_MAX_BUCKETS];
    if (!le_texts_init(&t, les_us, nle)) {
        b->overflow = true;
    } else {
        render_labels(&lb, labels, n);
        if (lb.overflow)
            b->overflow = true;
        else
            write_histogram(b, name, lb.data, lb.len, h, &t, cumulative);
    }
    le_texts_free(&t);
    veer_prom_buf_free(&lb);
}

/* ---- the SPEC families --------------------------------------------------- */

static const char *route_name(const veer_stats_layout_t *l, size_t r)
{
    return r < l->route_count ? l->route_names[r] : "";
}

static const char *cluster_name(const veer_stats_layout_t *l, size_t c)
{
    return c < l->cluster_count ? l->cluster_names[c] : "";
}

/* route="..",cluster=".." of series (r, c) into scratch. */
static void render_series_labels(veer_prom_buf_t *scratch, const veer_stats_layout_t *l, size_t r, size_t c)
{
    veer_prom_label_t labels[] = {{"route", route_name(l, r)}, {"cluster", cluster_name(l, c)}};
    render_labels(scratch, labels, 2);
}

/* Walks the series with data: r in [0, route_count], c in [0, cluster_count]
 * (the last of each being "none"). */
#define FOR_EACH_SERIES(l, r, c)                       \
    for (size_t r = 0; r <= (l)->route_count; r++)     \
        for (size_t c = 0; c <= (l)->cluster_count; c++)

static veer_stats_view_t *view_new(void)
{
    return malloc(sizeof(veer_stats_view_t));
}

/* Counters of one kind (classes or reasons) per series, as name{route,cluster,key="..."}. */
static void write_series_counters(veer_prom_buf_t *b, const veer_stats_t *st, const veer_stats_layout_t *l,
                                  const char *name, const char *key, bool classes)
{
    veer_stats_view_t *v = view_new();
    if (!v) {
        b->overflow = true;
        return;
    }
    veer_prom_buf_t lb;
    veer_prom_buf_init(&lb, b->max);
    FOR_EACH_SERIES(l, r, c)
    {
        if (!veer_stats_has_data(st, l, (int)r, (int)c))
            continue;
        memset(&v->counts, 0, sizeof v->counts);
        veer_stats_read_total(st, l, (int)r, (int)c, VEER_STATS_READ_COUNTS, v);
        render_series_labels(&lb, l, r, c);
        size_t base = lb.len;
        int first = classes ? 1 : VEER_STATS_FAIL_NONE + 1;
        int last = classes ? VEER_STATS_CLASS_COUNT : VEER_STATS_FAIL_COUNT;
        for (int i = first; i < last; i++) {
            lb.len = base;
            veer_prom_append(&lb, ",", 1);
            append_str(&lb, key);
            veer_prom_append(&lb, "=\"", 2);
            append_str(&lb, classes ? veer_stats_class_name(i) : veer_stats_fail_name((veer_stats_fail_t)i));
            veer_prom_append(&lb, "\"", 1);
            if (lb.overflow) {
                b->overflow = true;
                break;
            }
            sample_u64(b, name, lb.data, lb.len, classes ? v->counts.classes[i] : v->counts.failures[i]);
        }
    }
    free(v);
    veer_prom_buf_free(&lb);
}

void veer_prom_write_requests(veer_prom_buf_t *b, const veer_stats_t *st, const veer_stats_layout_t *layout)
{
    veer_prom_family(b, "veer_requests_total", "counter",
                     "Requests by route, cluster and class of the status sent to the client.");
    write_series_counters(b, st, layout, "veer_requests_total", "code_class", true);
}

void veer_prom_write_failures(veer_prom_buf_t *b, const veer_stats_t *st, const veer_stats_layout_t *layout)
{
    veer_prom_family(b, "veer_request_failures_total", "counter",
                     "Requests that count as failures in the success rate, by reason.");
    write_series_counters(b, st, layout, "veer_request_failures_total", "reason", false);
}

/* What writing a family of histograms from the stats needs: the `le`
 * texts, a label buffer, a view to read series into, cumulative counts. */
typedef struct hist_scratch_s {
    le_texts_t t;
    veer_prom_buf_t lb;
    veer_stats_view_t *v;
    uint64_t cumulative[VEER_PROM_MAX_BUCKETS];
} hist_scratch_t;

/* false (b marked overflowed, nothing left to free) when out of memory. */
static bool hist_scratch_init(hist_scratch_t *sc, veer_prom_buf_t *b, const uint64_t *les_us, size_t nle)
{
    sc->t = (le_texts_t){0};
    veer_prom_buf_init(&sc->lb, b->max);
    sc->v = view_new();
    if (!sc->v || !le_texts_init(&sc->t, les_us, nle)) {
        b->overflow = true;
        free(sc->v);
        le_texts_free(&sc->t);
        return false;
    }
    return true;
}

static void hist_scratch_free(hist_scratch_t *sc)
{
    free(sc->v);
    le_texts_free(&sc->t);
    veer_prom_buf_free(&sc->lb);
}

/* One histogram per (route, cluster) series with data. */
static void write_series_histograms(veer_prom_buf_t *b, const veer_stats_t *st, const veer_stats_layout_t *l,
                                    const char *name, unsigned what, const uint64_t *les_us, size_t nle)
{
    hist_scratch_t sc;
    if (!hist_scratch_init(&sc, b, les_us, nle))
        return;
    veer_hist_t *h = what == VEER_STATS_READ_DURATION ? &sc.v->duration : &sc.v->ttfb;
    FOR_EACH_SERIES(l, r, c)
    {
        if (!veer_stats_has_data(st, l, (int)r, (int)c))
            continue;
        veer_hist_reset(h);
        veer_stats_read_total(st, l, (int)r, (int)c, what, sc.v);
        render_series_labels(&sc.lb, l, r, c);
        if (sc.lb.overflow) {
            b->overflow = true;
            break;
        }
        write_histogram(b, name, sc.lb.data, sc.lb.len, h, &sc.t, sc.cumulative);
    }
    hist_scratch_free(&sc);
}

void veer_prom_write_durations(veer_prom_buf_t *b, const veer_stats_t *st, const veer_stats_layout_t *layout,
                               const uint64_t *les_us, size_t nle)
{
    veer_prom_family(b, "veer_request_duration_seconds", "histogram",
                     "Time from the first byte of the request to the last byte of the response.");
    write_series_histograms(b, st, layout, "veer_request_duration_seconds", VEER_STATS_READ_DURATION, les_us,
                            nle);
}

void veer_prom_write_first_byte_durations(veer_prom_buf_t *b, const veer_stats_t *st,
                                          const veer_stats_layout_t *layout, const uint64_t *les_us, size_t nle)
{
    veer_prom_family(b, "veer_upstream_first_byte_duration_seconds", "histogram",
                     "Time from the first byte of the request to the first byte of the upstream response.");
    write_series_histograms(b, st, layout, "veer_upstream_first_byte_duration_seconds", VEER_STATS_READ_TTFB,
                            les_us, nle);
}

void veer_prom_write_connect_durations(veer_prom_buf_t *b, const veer_stats_t *st,
                                       const veer_stats_layout_t *layout, const uint64_t *les_us, size_t nle)
{
    veer_prom_family(b, "veer_upstream_connect_duration_seconds", "histogram",
                     "Time to set up a new upstream connection, TLS included.");
    hist_scratch_t sc;
    if (!hist_scratch_init(&sc, b, les_us, nle))
        return;
    for (size_t c = 0; c < layout->cluster_count; c++) {
        bool any = false;
        veer_hist_reset(&sc.v->connect);
        for (size_t r = 0; r <= layout->route_count; r++) {
            if (!veer_stats_has_data(st, layout, (int)r, (int)c))
                continue;
            any = true;
            veer_stats_read_total(st, layout, (int)r, (int)c, VEER_STATS_READ_CONNECT, sc.v);
        }
        if (!any)
            continue;
        veer_prom_label_t label = {"cluster", layout->cluster_names[c]};
        render_labels(&sc.lb, &label, 1);
        if (sc.lb.overflow) {
            b->overflow = true;
            break;
        }
        write_histogram(b, "veer_upstream_connect_duration_seconds", sc.lb.data, sc.lb.len, &sc.v->connect,
                        &sc.t, sc.cumulative);
    }
    hist_scratch_free(&sc);
}

void veer_prom_write_stats_health(veer_prom_buf_t *b, const veer_stats_t *st)
{
    veer_stats_health_t health;
    veer_stats_read_health(st, &health);
    veer_prom_family(b, "veer_stats_dropped_total", "counter",
                     "Requests or durations the statistics could not record: no_series (stats.max_series "
                     "reached), out_of_memory, window_memory (a window duration; stats.max_window_bytes reached).");
    const struct {
        const char *labels;
        uint64_t value;
    } reasons[] = {
        {"reason=\"no_series\"", health.no_series},
        {"reason=\"out_of_memory\"", health.alloc_failed},
        {"reason=\"window_memory\"", health.window_dropped},
    };
    for (size_t i = 0; i < sizeof reasons / sizeof reasons[0]; i++)
        sample_u64(b, "veer_stats_dropped_total", reasons[i].labels, strlen(reasons[i].labels), reasons[i].value);
}

int veer_prom_write_stats(veer_prom_buf_t *b, const veer_stats_t *st, const veer_stats_layout_t *layout,
                          const uint64_t *les_us, size_t nle)
{
    veer_prom_write_requests(b, st, layout);
    veer_prom_write_failures(b, st, layout);
    veer_prom_write_durations(b, st, layout, les_us, nle);
    veer_prom_write_connect_durations(b, st, layout, les_us, nle);
    veer_prom_write_stats_health(b, st);
    return veer_prom_buf_status(b);
}
