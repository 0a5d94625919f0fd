/* config.c - load and validate veer's JSON config into the model of config.h.
 * Validation never stops at the first problem: every error is collected as
 * "json.path: message" so that `veer check` shows them all in one run, and a
 * config with any error is never returned (everything built so far is freed). */

#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#define JPATH_CAP 256
#define MAX_FILE_BYTES (16u << 20)
#define MAX_SAFE_INT 9007199254740991ull /* 2^53 - 1: JSON numbers are doubles */
#define MAX_NAME_LEN 64
#define MAX_WORKERS 1024
#define DURATION_HINT "(use a number with a unit: 250ms, 30s, 5m)"
#define ENDPOINT_HINT "(use host:port, e.g. embed-blue.svc:8080, 10.0.0.5:8080 or [fd00::5]:8080)"
#define ADDRESS_HINT "(use a literal IPv4 or [IPv6] address with a port, e.g. 0.0.0.0:8080 or [::1]:8080)"

/* A JSON path such as `routes[2].split[1].cluster`, built as we descend. */
typedef struct jpath_s {
    char s[JPATH_CAP];
} jpath_t;

typedef struct parse_ctx_s {
    veer_config_errors_t *errs;
    size_t error_count; /* errors found by this parse (some may be dropped) */
} parse_ctx_t;

/* Flags of read_string / read_array / read_object. */
enum {
    F_REQUIRED = 1u << 0,
    F_NULLABLE = 1u << 1,
    F_ALLOW_EMPTY = 1u << 2,
};

/* ---- errors -------------------------------------------------------------- */

static void errors_push(veer_config_errors_t *errs, const char *path, const char *detail)
{
    if (errs->count == VEER_CONFIG_MAX_ERRORS) {
        errs->dropped++;
        return;
    }
    size_t size = (path ? strlen(path) + 2 : 0) + strlen(detail) + 1;
    char *msg = malloc(size);
    if (!msg) {
        errs->dropped++;
        return;
    }
    if (path)
        snprintf(msg, size, "%s: %s", path, detail);
    else
        snprintf(msg, size, "%s", detail);
    errs->messages[errs->count++] = msg;
}

__attribute__((format(printf, 3, 4)))
static void add_error(parse_ctx_t *ctx, const jpath_t *at, const char *fmt, ...)
{
    char detail[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    ctx->error_count++;
    errors_push(ctx->errs, at && at->s[0] ? at->s : NULL, detail);
}

static void add_oom(parse_ctx_t *ctx, const jpath_t *at)
{
    add_error(ctx, at, "out of memory");
}

void veer_config_errors_clear(veer_config_errors_t *errs)
{
    if (!errs)
        return;
    for (size_t i = 0; i < errs->count; i++)
        free(errs->messages[i]);
    memset(errs, 0, sizeof *errs);
}

/* ---- JSON paths and value descriptions ----------------------------------- */

static bool is_plain_key(const char *key)
{
    if (!*key)
        return false;
    for (const char *c = key; *c; c++) {
        bool ok = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
                  *c == '_' || *c == '-';
        if (!ok)
            return false;
    }
    return true;
}

static void path_mark_truncated(jpath_t *p)
{
    memcpy(p->s + sizeof p->s - 4, "...", 4);
}

static jpath_t path_key(const jpath_t *at, const char *key)
{
    jpath_t p;
    int n;
    if (is_plain_key(key))
        n = snprintf(p.s, sizeof p.s, "%s%s%s", at->s, at->s[0] ? "." : "", key);
    else
        n = snprintf(p.s, sizeof p.s, "%s[\"%s\"]", at->s, key);
    if (n < 0 || (size_t)n >= sizeof p.s)
        path_mark_truncated(&p);
    return p;
}

static jpath_t path_index(const jpath_t *at, size_t index)
{
    jpath_t p;
    int n = snprintf(p.s, sizeof p.s, "%s[%zu]", at->s, index);
    if (n < 0 || (size_t)n >= sizeof p.s)
        path_mark_truncated(&p);
    return p;
}

/* A short rendering of a JSON value for "got ..." in messages. */
static const char *describe(const cJSON *item, char *buf, size_t cap)
{
    if (cJSON_IsString(item)) {
        size_t len = strlen(item->valuestring);
        snprintf(buf, cap, "\"%.40s%s\"", item->valuestring, len > 40 ? "..." : "");
    } else if (cJSON_IsNumber(item)) {
        double v = item->valuedouble;
        snprintf(buf, cap, v == floor(v) && fabs(v) < 1e15 ? "%.0f" : "%g", v);
    } else if (cJSON_IsBool(item)) {
        snprintf(buf, cap, "%s", cJSON_IsTrue(item) ? "true" : "false");
    } else if (cJSON_IsNull(item)) {
        snprintf(buf, cap, "null");
    } else if (cJSON_IsArray(item)) {
        snprintf(buf, cap, "an array");
    } else {
        snprintf(buf, cap, "an object");
    }
    return buf;
}

/* "250ms", "30s", "5m", "1h": the largest unit that divides ms exactly. */
static const char *format_ms(uint64_t ms, char *buf, size_t cap)
{
    if (ms == 0)
        snprintf(buf, cap, "0s");
    else if (ms % 3600000 == 0)
        snprintf(buf, cap, "%" PRIu64 "h", ms / 3600000);
    else if (ms % 60000 == 0)
        snprintf(buf, cap, "%" PRIu64 "m", ms / 60000);
    else if (ms % 1000 == 0)
        snprintf(buf, cap, "%" PRIu64 "s", ms / 1000);
    else
        snprintf(buf, cap, "%" PRIu64 "ms", ms);
    return buf;
}

/* ---- object keys --------------------------------------------------------- */

static bool key_in(const char *key, const char *const *keys)
{
    for (size_t i = 0; keys[i]; i++)
        if (strcmp(key, keys[i]) == 0)
            return true;
    return false;
}

static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 40 || lb > 40)
        return SIZE_MAX;
    size_t row[41];
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

/* The allowed key a typo most likely meant, or NULL. */
static const char *closest_key(const char *key, const char *const *keys)
{
    const char *best = NULL;
    size_t best_distance = 3;
    for (size_t i = 0; keys[i]; i++) {
        size_t d = edit_distance(key, keys[i]);
        if (d < best_distance && d < strlen(keys[i])) {
            best = keys[i];
            best_distance = d;
        }
    }
    return best;
}

static bool seen_before(const cJSON *obj, const cJSON *item)
{
    for (const cJSON *prev = obj->child; prev && prev != item; prev = prev->next)
        if (strcmp(prev->string, item->string) == 0)
            return true;
    return false;
}

static void check_keys(parse_ctx_t *ctx, const cJSON *obj, const jpath_t *at, const char *const *keys)
{
    for (const cJSON *item = obj->child; item; item = item->next) {
        jpath_t p = path_key(at, item->string);
        if (!key_in(item->string, keys)) {
            const char *hint = closest_key(item->string, keys);
            if (hint)
                add_error(ctx, &p, "unknown key (did you mean \"%s\"?)", hint);
            else
                add_error(ctx, &p, "unknown key");
        } else if (seen_before(obj, item)) {
            add_error(ctx, &p, "duplicate key");
        }
    }
}

/* ---- typed readers -------------------------------------------------------------
 * Each reads obj[key] (obj may be NULL: then the default applies), reports
 * what is wrong under at.key and returns the default on error, so that
 * validation carries on and finds the next error. */

static const cJSON *lookup(const cJSON *obj, const char *key)
{
    return obj ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
}

static char *dup_string(parse_ctx_t *ctx, const jpath_t *at, const char *s)
{
    char *copy = strdup(s);
    if (!copy)
        add_oom(ctx, at);
    return copy;
}

static bool json_to_uint(const cJSON *item, uint64_t *out)
{
    if (!cJSON_IsNumber(item) || !isfinite(item->valuedouble))
        return false;
    double v = item->valuedouble;
    if (v < 0 || v != floor(v) || v > (double)MAX_SAFE_INT)
        return false;
    *out = (uint64_t)v;
    return true;
}

static uint64_t read_uint(parse_ctx_t *ctx, const cJSON *obj, const jpath_t *at, const char *key, uint64_t min,
                          uint64_t max, uint64_t def)
{
    const cJSON *item = lookup(obj, key);
    if (!item)
        return def;
    jpath_t p = path_key(at, key);
    char got[64];
    uint64_t v;
    if (!json_to_uint(item, &v) || (min > 0 && v == 0)) {
        add_error(ctx, &p, "expected a %s integer, got %s", min > 0 ? "positive" : "non-negative",
                  describe(item, got, sizeof got));
        return def;
    }
    if (v < min || v > max) {
        add_error(ctx, &p, "must be between %" PRIu64 " and %" PRIu64 ", got %" PRIu64, min, max, v);
        return def;
    }
    return v;
}

static double read_number(parse_ctx_t *ctx, const cJSON *obj, const jpath_t *at, const char *key, double min,
                          bool min_exclusive, double max, double def)
{
    const cJSON *item = lookup(obj, key);
    if (!item)
        return def;
    jpath_t p = path_key(at, key);
    char got[64];
    if (!cJSON_IsNumber(item) || !isfinite(item->valuedouble)) {
        add_error(ctx, &p, "expected a number, got %s", describe(item, got, sizeof got));
        return def;
    }
    double v = item->valuedouble;
    if ((min_exclusive ? v <= min : v < min) || v > max) {
        add_error(ctx, &p, "must be %s %g and at most %g, got %g", min_exclusive ? "greater than" : "at least", min,
                  max, v);
        return def;
    }
    return v;
}

static bool read_bool(parse_ctx_t *ctx, const cJSON *obj, const jpath_t *at, const char *key, bool def)
{
    const cJSON *item = lookup(obj, key);
    if (!item)
        return def;
    if (!cJSON_IsBool(item)) {
        jpath_t p = path_key(at, key);
        char got[64];
        add_error(ctx, &p, "expected true or false, got %s", describe(item, got, sizeof got));
        return def;
    }
    return cJSON_IsTrue(item);
}

static uint64_t read_duration(parse_ctx_t *ctx, const cJSON *obj, const jpath_t *at, const char *key,
                              uint64_t min_ms, uint64_t def_ms)
{
    const cJSON *item = lookup(obj, key);
    if (!item)
        return def_ms;
    jpath_t p = path_key(at, key);
    char got[64], limit[32];
    uint64_t ms;
    if (cJSON_IsNumber(item)) {
        add_error(ctx, &p, "invalid duration %s: durations are strings with a unit, e.g. \"%gs\" or \"250ms\"",
                  describe(item, got, sizeof got), item->valuedouble);
        return def_ms;
    }
    if (!cJSON_IsString(item)) {
        add_error(ctx, &p, "expected a duration such as \"30s\", got %s", describe(item, got, sizeof got));
        return def_ms;
    }
    if (veer_duration_parse(item->valuestring, &ms) != 0) {
        add_error(ctx, &p, "invalid duration %s " DURATION_HINT, describe(item, got, sizeof got));
        return def_ms;
    }
    if (ms < min_ms) {
        add_error(ctx, &p, "must be at least %s, got %s", format_ms(min_ms, limit, sizeof limit),
                  describe(item, got, sizeof got));
        return def_ms;
    }
    return ms;
}

static bool has_control_char(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return true;
    return false;
}

/* A heap copy of obj[key]; NULL when absent (then a copy of def, if any),
 * null (with F_NULLABLE) or wrong. */
static char *read_string(parse_ctx_t *ctx, const cJSON *obj, const jpath_t *at, const char *key, unsigned flags,
                         const char *def)
{
    const cJSON *item = lookup(obj, key);
    jpath_t p = path_key(at, key);
    char got[64];
    if (!item) {
        if (flags & F_REQUIRED)
            add_error(ctx, &p, "required key is missing");
        return def ? dup_string(ctx, &p, def) : NULL;
    }
    if (cJSON_IsNull(item) && (flags & F_NULLABLE))
        return NULL;
    if (!cJSON_IsString(item)) {
        add_error(ctx, &p, "expected a string%s, got %s", (flags & F_NULLABLE) ? " or null" : "",
                  describe(item, got, sizeof got));
        return NULL;
    }
    if (!item->valuestring[0] && !(flags & F_ALLOW_EMPTY)) {
        add_error(ctx, &p, "must not be empty");
        return NULL;
    }
    if (has_control_char(item->valuestring)) {
        add_error(ctx, &p, "must not contain control characters");
        return NULL;
    }
    return dup_string(ctx, &p, item->valuestring);
}

/* Index of obj[key] in names (NULL-terminated), def when absent. */
static int read_enum(parse_ctx_t *ctx, const cJSON *obj, const jpath_t *at, const char *key,
                     const char *const *names, int def)
{
    const cJSON *item = lookup(obj, key);
    if (!item)
        return def;
    if (cJSON_IsString(item))
        for (int i = 0; names[i]; i++)
            if (strcmp(item->valuestring, names[i]) == 0)
                return i;
    char choices[128] = "", got[64];
    for (int i = 0; names[i]; i++) {
        size_t used = strlen(choices);
        snprintf(choices + used, sizeof choices - used, "%s%s", i ? ", " : "", names[i]);
    }
    jpath_t p = path_key(at, key);
    if (cJSON_IsString(item))
        add_error(ctx, &p, "unknown value %s (expected one of: %s)", describe(item, got, sizeof got), choices);
    else
        add_error(ctx, &p, "expected a string (one of: %s), got %s", choices, describe(item, got, sizeof got));
    return def;
}

/* obj[key] when it is an object (its keys checked against keys), else NULL. */
static const cJSON *read_object(parse_ctx_t *ctx, const cJSON *obj, const jpath_t *at, const char *key,
                                unsigned flags, const char *const *keys)
{
    const cJSON *item = lookup(obj, key);
    jpath_t p = path_key(at, key);
    char got[64];
    if (!item) {
        if (flags & F_REQUIRED)
            add_error(ctx, &p, "required key is missing");
        return NULL;
    }
    if (cJSON_IsNull(item) && (flags & F_NULLABLE))
        return NULL;
    if (!cJSON_IsObject(item)) {
        add_error(ctx, &p, "expected an object%s, got %s", (flags & F_NULLABLE) ? " or null" : "",
                  describe(item, got, sizeof got));
        return NULL;
    }
    if (keys)
        check_keys(ctx, item, &p, keys);
    return item;
}

/* obj[key] when it is an array (non-empty unless F_ALLOW_EMPTY), else NULL. */
static const cJSON *read_array(parse_ctx_t *ctx, const cJSON *obj, const jpath_t *at, const char *key,
                               unsigned flags)
{
    const cJSON *item = lookup(obj, key);
    jpath_t p = path_key(at, key);
    char got[64];
    const char *what = (flags & F_ALLOW_EMPTY) ? "an array" : "a non-empty array";
    if (!item) {
        if (flags & F_REQUIRED)
            add_error(ctx, &p, "required key is missing");
        return NULL;
    }
    if (cJSON_IsNull(item) && (flags & F_NULLABLE))
        return NULL;
    if (!cJSON_IsArray(item)) {
        add_error(ctx, &p, "expected %s%s, got %s", what, (flags & F_NULLABLE) ? " or null" : "",
                  describe(item, got, sizeof got));
        return NULL;
    }
    if (!item->child && !(flags & F_ALLOW_EMPTY)) {
        add_error(ctx, &p, "expected %s, got an empty array", what);
        return NULL;
    }
    return item;
}

/* An array element that must be an object with the given keys. */
static bool expect_object(parse_ctx_t *ctx, const cJSON *item, const jpath_t *at, const char *const *keys)
{
    char got[64];
    if (!cJSON_IsObject(item)) {
        add_error(ctx, at, "expected an object, got %s", describe(item, got, sizeof got));
        return false;
    }
    check_keys(ctx, item, at, keys);
    return true;
}

static void *alloc_zeroed(parse_ctx_t *ctx, const jpath_t *at, size_t size)
{
    void *p = calloc(1, size);
    if (!p)
        add_oom(ctx, at);
    return p;
}

/* Calloc'ed array for a JSON array/object's elements; count set on success. */
static void *alloc_items(parse_ctx_t *ctx, const jpath_t *at, const cJSON *container, size_t size, size_t *count)
{
    size_t n = (size_t)cJSON_GetArraySize(container);
    void *items = n ? calloc(n, size) : NULL;
    if (n && !items) {
        add_oom(ctx, at);
        return NULL;
    }
    *count = n;
    return items;
}

/* ---- lexical checks ------------------------------------------------------ */

static bool is_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Names of listeners, clusters and routes appear in URLs and metric labels. */
static bool check_name(parse_ctx_t *ctx, const jpath_t *at, const char *name)
{
    size_t len = strlen(name);
    bool ok = len > 0 && len <= MAX_NAME_LEN;
    for (size_t i = 0; ok && i < len; i++)
        ok = is_alnum(name[i]) || name[i] == '-' || name[i] == '_' || name[i] == '.';
    if (!ok)
        add_error(ctx, at, "invalid name \"%.*s\" (use letters, digits, '-', '_' and '.', at most %d characters)",
                  MAX_NAME_LEN, name, MAX_NAME_LEN);
    return ok;
}

/* RFC 9110 token: header names, cookie names, methods. */
static bool is_token(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!is_alnum(*s) && !strchr("!#$%&'*+-.^_`|~", *s))
            return false;
    return true;
}

static void to_lower(char *s)
{
    for (; *s; s++)
        if (*s >= 'A' && *s <= 'Z')
            *s = (char)(*s - 'A' + 'a');
}

static void to_upper(char *s)
{
    for (; *s; s++)
        if (*s >= 'a' && *s <= 'z')
            *s = (char)(*s - 'a' + 'A');
}

static bool valid_dns_label(const char *label, size_t len)
{
    if (len == 0 || len > 63 || label[0] == '-' || label[len - 1] == '-')
        return false;
    for (size_t i = 0; i < len; i++)
        if (!is_alnum(label[i]) && label[i] != '-' && label[i] != '_')
            return false;
    return true;
}

/* A DNS name whose last label is not all digits (that would be a bad IPv4). */
static bool valid_dns_name(const char *host)
{
    size_t len = strlen(host);
    if (len > 0 && host[len - 1] == '.')
        len--;
    if (len == 0 || len > 253)
        return false;
    const char *label = host, *end = host + len;
    bool last_numeric = false;
    while (label <= end) {
        const char *dot = memchr(label, '.', (size_t)(end - label));
        size_t label_len = (size_t)((dot ? dot : end) - label);
        if (!valid_dns_label(label, label_len))
            return false;
        last_numeric = true;
        for (size_t i = 0; i < label_len; i++)
            last_numeric = last_numeric && is_digit(label[i]);
        if (!dot)
            break;
        label = dot + 1;
    }
    return !last_numeric;
}

/* ---- durations and addresses --------------------------------------------- */

static uint64_t unit_micros(const char *unit)
{
    static const struct {
        const char *name;
        uint64_t micros;
    } units[] = {{"us", 1}, {"ms", 1000}, {"s", 1000000}, {"m", 60000000}, {"h", 3600000000ull}};
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
        if (strcmp(unit, units[i].name) == 0)
            return units[i].micros;
    return 0;
}

/* ceil(0.<digits> * unit_us), exact: the first 9 digits are multiplied out,
 * any non-zero digit after them only rounds up. */
static uint64_t fraction_micros(const char *digits, size_t len, uint64_t unit_us)
{
    uint64_t numerator = 0;
    bool rest_nonzero = false;
    for (size_t i = 0; i < 9; i++)
        numerator = numerator * 10 + (i < len ? (uint64_t)(digits[i] - '0') : 0);
    for (size_t i = 9; i < len; i++)
        rest_nonzero = rest_nonzero || digits[i] != '0';
    uint64_t product = numerator * unit_us; /* < 1e9 * 3.6e9: fits */
    uint64_t micros = product / 1000000000ull;
    if (product % 1000000000ull || rest_nonzero)
        micros++;
    return micros;
}

int veer_duration_parse(const char *text, uint64_t *out_ms)
{
    uint64_t us;
    if (!out_ms || veer_duration_parse_us(text, &us) != 0)
        return -1;
    *out_ms = us / 1000 + (us % 1000 != 0);
    return 0;
}

int veer_duration_parse_us(const char *text, uint64_t *out_us)
{
    if (!text || !out_us || !is_digit(*text))
        return -1;
    const char *s = text;
    uint64_t whole = 0;
    for (; is_digit(*s); s++)
        if (__builtin_mul_overflow(whole, 10, &whole) || __builtin_add_overflow(whole, (uint64_t)(*s - '0'), &whole))
            return -1;
    const char *fraction = s;
    size_t fraction_len = 0;
    if (*s == '.') {
        fraction = ++s;
        for (; is_digit(*s); s++)
            fraction_len++;
        if (fraction_len == 0)
            return -1;
    }
    uint64_t unit_us = unit_micros(s);
    uint64_t total_us;
    if (unit_us == 0 || __builtin_mul_overflow(whole, unit_us, &total_us) ||
        __builtin_add_overflow(total_us, fraction_micros(fraction, fraction_len, unit_us), &total_us))
        return -1;
    *out_us = total_us;
    return 0;
}

/* Split "host:port" / "[v6]:port" into host (brackets removed) and port 1..65535. */
static int split_host_port(const char *text, char *host, size_t host_cap, uint16_t *port, bool *bracketed)
{
    const char *host_start = text, *host_end, *colon;
    *bracketed = text[0] == '[';
    if (*bracketed) {
        host_start = text + 1;
        host_end = strchr(host_start, ']');
        if (!host_end || host_end[1] != ':')
            return -1;
        colon = host_end + 1;
    } else {
        colon = strrchr(text, ':');
        if (!colon)
            return -1;
        host_end = colon;
        if (memchr(text, ':', (size_t)(colon - text)))
            return -1; /* an IPv6 literal needs brackets */
    }
    size_t host_len = (size_t)(host_end - host_start);
    const char *digits = colon + 1;
    size_t digit_count = strlen(digits);
    if (host_len == 0 || host_len >= host_cap || digit_count == 0 || digit_count > 5)
        return -1;
    unsigned long value = 0;
    for (size_t i = 0; i < digit_count; i++) {
        if (!is_digit(digits[i]))
            return -1;
        value = value * 10 + (unsigned long)(digits[i] - '0');
    }
    if (value == 0 || value > 65535)
        return -1;
    memcpy(host, host_start, host_len);
    host[host_len] = '\0';
    *port = (uint16_t)value;
    return 0;
}

int veer_sockaddr_parse(const char *text, struct sockaddr_storage *out, socklen_t *outlen)
{
    char host[INET6_ADDRSTRLEN + 1];
    uint16_t port;
    bool bracketed;
    if (!text || !out || !outlen || split_host_port(text, host, sizeof host, &port, &bracketed) != 0)
        return -1;
    memset(out, 0, sizeof *out);
    if (bracketed) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)out;
        if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1)
            return -1;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(port);
        *outlen = sizeof *sin6;
    } else {
        struct sockaddr_in *sin = (struct sockaddr_in *)out;
        if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
            return -1;
        sin->sin_family = AF_INET;
        sin->sin_port = htons(port);
        *outlen = sizeof *sin;
    }
    return 0;
}

static bool same_sockaddr(const struct sockaddr_storage *a, socklen_t alen, const struct sockaddr_storage *b,
                          socklen_t blen)
{
    return alen == blen && memcmp(a, b, alen) == 0;
}

/* A literal address at obj[key]: required, or def when absent. */
static char *read_address(parse_ctx_t *ctx, const cJSON *obj, const jpath_t *at, const char *key, const char *def,
                          struct sockaddr_storage *addr, socklen_t *addrlen)
{
    jpath_t p = path_key(at, key);
    char *text = read_string(ctx, obj, at, key, def ? 0 : F_REQUIRED, def);
    if (text && veer_sockaddr_parse(text, addr, addrlen) != 0)
        add_error(ctx, &p, "invalid address \"%s\" " ADDRESS_HINT, text);
    return text;
}

/* ---- top level: listeners, admin, access log, limits --------------------- */

static bool string_seen_before(const cJSON *array, const cJSON *item)
{
    for (const cJSON *prev = array->child; prev && prev != item; prev = prev->next)
        if (cJSON_IsString(prev) && strcmp(prev->valuestring, item->valuestring) == 0)
            return true;
    return false;
}

static void parse_listener_alpn(parse_ctx_t *ctx, const cJSON *tls, const jpath_t *at,
                                veer_tls_listener_config_t *out)
{
    static const char *const defaults[] = {"h2", "http/1.1"};
    const cJSON *array = read_array(ctx, tls, at, "alpn", 0);
    jpath_t p = path_key(at, "alpn");
    if (lookup(tls, "alpn") && !array)
        return; /* reported */
    size_t count = array ? (size_t)cJSON_GetArraySize(array) : 2;
    out->alpn = calloc(count, sizeof *out->alpn);
    if (!out->alpn) {
        add_oom(ctx, &p);
        return;
    }
    out->alpn_count = count;
    if (!array) {
        for (size_t i = 0; i < count; i++)
            out->alpn[i] = dup_string(ctx, &p, defaults[i]);
        return;
    }
    size_t i = 0;
    for (const cJSON *item = array->child; item; item = item->next, i++) {
        jpath_t ip = path_index(&p, i);
        char got[64];
        if (!cJSON_IsString(item) || (strcmp(item->valuestring, "h2") && strcmp(item->valuestring, "http/1.1")))
            add_error(ctx, &ip, "expected \"h2\" or \"http/1.1\", got %s", describe(item, got, sizeof got));
        else if (string_seen_before(array, item))
            add_error(ctx, &ip, "duplicate protocol %s", describe(item, got, sizeof got));
        else
            out->alpn[i] = dup_string(ctx, &ip, item->valuestring);
    }
}

static veer_tls_listener_config_t *parse_listener_tls(parse_ctx_t *ctx, const cJSON *listener, const jpath_t *at)
{
    static const char *const keys[] = {"cert", "key", "alpn", "client_ca", NULL};
    const cJSON *tls = read_object(ctx, listener, at, "tls", F_NULLABLE, keys);
    if (!tls)
        return NULL;
    jpath_t p = path_key(at, "tls");
    veer_tls_listener_config_t *out = alloc_zeroed(ctx, &p, sizeof *out);
    if (!out)
        return NULL;
    out->cert = read_string(ctx, tls, &p, "cert", F_REQUIRED, NULL);
    out->key = read_string(ctx, tls, &p, "key", F_REQUIRED, NULL);
    parse_listener_alpn(ctx, tls, &p, out);
    out->client_ca = read_string(ctx, tls, &p, "client_ca", F_NULLABLE, NULL);
    return out;
}

static void parse_listener(parse_ctx_t *ctx, const cJSON *item, const jpath_t *at, size_t index,
                           veer_listener_config_t *out)
{
    static const char *const keys[] = {"name", "address", "tls", NULL};
    if (!expect_object(ctx, item, at, keys))
        return;
    char default_name[32];
    if (index == 0)
        snprintf(default_name, sizeof default_name, "http");
    else
        snprintf(default_name, sizeof default_name, "listener%zu", index);
    jpath_t name_path = path_key(at, "name");
    out->name = read_string(ctx, item, at, "name", 0, default_name);
    if (out->name)
        check_name(ctx, &name_path, out->name);
    out->address = read_address(ctx, item, at, "address", NULL, &out->addr, &out->addrlen);
    out->tls = parse_listener_tls(ctx, item, at);
}

static void check_listener_duplicates(parse_ctx_t *ctx, const veer_config_t *cfg, const jpath_t *at)
{
    for (size_t i = 0; i < cfg->listener_count; i++) {
        const veer_listener_config_t *l = &cfg->listeners[i];
        jpath_t ip = path_index(at, i);
        for (size_t j = 0; j < i; j++) {
            const veer_listener_config_t *prev = &cfg->listeners[j];
            jpath_t p;
            if (l->name && prev->name && strcmp(l->name, prev->name) == 0) {
                p = path_key(&ip, "name");
                add_error(ctx, &p, "duplicate listener name \"%s\" (also listeners[%zu])", l->name, j);
            }
            if (l->addrlen && same_sockaddr(&l->addr, l->addrlen, &prev->addr, prev->addrlen)) {
                p = path_key(&ip, "address");
                add_error(ctx, &p, "duplicate address \"%s\" (also listeners[%zu])", l->address, j);
            }
        }
    }
}

static void parse_listeners(parse_ctx_t *ctx, veer_config_t *cfg, const cJSON *root, const jpath_t *at)
{
    const cJSON *array = read_array(ctx, root, at, "listeners", F_REQUIRED);
    jpath_t p = path_key(at, "listeners");
    if (!array)
        return;
    cfg->listeners = alloc_items(ctx, &p, array, sizeof *cfg->listeners, &cfg->listener_count);
    if (!cfg->listeners)
        return;
    size_t i = 0;
    for (const cJSON *item = array->child; item; item = item->next, i++) {
        jpath_t ip = path_index(&p, i);
        parse_listener(ctx, item, &ip, i, &cfg->listeners[i]);
    }
    check_listener_duplicates(ctx, cfg, &p);
}

static void parse_admin(parse_ctx_t *ctx, veer_config_t *cfg, const cJSON *root, const jpath_t *at)
{
    static const char *const keys[] = {"address", "token_file", "protect_reads", NULL};
    const cJSON *admin = read_object(ctx, root, at, "admin", 0, keys);
    jpath_t p = path_key(at, "admin");
    veer_admin_config_t *out = &cfg->admin;
    out->address = read_address(ctx, admin, &p, "address", "127.0.0.1:9901", &out->addr, &out->addrlen);
    out->token_file = read_string(ctx, admin, &p, "token_file", F_NULLABLE, NULL);
    out->protect_reads = read_bool(ctx, admin, &p, "protect_reads", false);
    if (out->protect_reads && !out->token_file) {
        jpath_t rp = path_key(&p, "protect_reads");
        add_error(ctx, &rp, "requires admin.token_file");
    }
    for (size_t i = 0; out->addrlen && i < cfg->listener_count; i++) {
        const veer_listener_config_t *l = &cfg->listeners[i];
        if (same_sockaddr(&out->addr, out->addrlen, &l->addr, l->addrlen)) {
            jpath_t ap = path_key(&p, "address");
            add_error(ctx, &ap, "address \"%s\" is also used by listeners[%zu]", out->address, i);
        }
    }
}

/* "host:port" or "[v6]:port" with a port in 1..65535; the host may be a
 * name, and every address it resolves to is a peer (peers.c). */
static bool valid_peer_address(const char *s)
{
    const char *colon = strrchr(s, ':');
    if (colon == NULL || colon == s || colon[1] == '\0' || strlen(colon + 1) > 5)
        return false;
    if (s[0] == '[' && colon[-1] != ']')
        return false;
    if (colon - s > 255) /* a DNS name is at most 253 characters */
        return false;
    unsigned long port = 0;
    for (const char *c = colon + 1; *c; c++) {
        if (!is_digit(*c))
            return false;
        port = port * 10 + (unsigned long)(*c - '0');
    }
    for (const char *c = s; c < colon; c++)
        if (*c == '/' || *c == ' ' || *c == '@')
            return false;
    return port >= 1 && port <= 65535;
}

/* A host name as gethostname() gives it: 1..253 of [A-Za-z0-9.-_], not
 * starting or ending with '.' or '-'. */
static bool valid_host_name(const char *s)
{
    size_t len = strlen(s);
    if (len == 0 || len > 253 || s[0] == '.' || s[0] == '-' || s[len - 1] == '.' || s[len - 1] == '-')
        return false;
    for (size_t i = 0; i < len; i++)
        if (!is_alnum(s[i]) && s[i] != '-' && s[i] != '.' && s[i] != '_')
            return false;
    return true;
}

/* peers.leader: every replica shares the peer list, so which one runs the
 * canary controller must be said, never guessed (two leaders would fight). */
static void parse_peers_leader(parse_ctx_t *ctx, const cJSON *obj, const jpath_t *at, veer_peers_config_t *out)
{
    const cJSON *item = lookup(obj, "leader");
    jpath_t lp = path_key(at, "leader");
    char got[64];
    if (item == NULL) {
        add_error(ctx, &lp, "required: true on the replica that runs the canary controller, false on the others, "
                            "or the leader's host name");
    } else if (cJSON_IsBool(item)) {
        out->leader = cJSON_IsTrue(item);
    } else if (!cJSON_IsString(item)) {
        add_error(ctx, &lp, "expected true, false or the leader's host name, got %s", describe(item, got, sizeof got));
    } else if (!valid_host_name(item->valuestring)) {
        add_error(ctx, &lp, "expected a host name (1-253 of letters, digits, '-', '.', '_'), got %s",
                  describe(item, got, sizeof got));
    } else {
        out->leader_host = dup_string(ctx, &lp, item->valuestring);
    }
}

bool veer_config_leads(const veer_config_t *cfg, const char *hostname)
{
    const veer_peers_config_t *pc = &cfg->peers;
    if (pc->leader_host != NULL)
        return hostname != NULL && strcmp(pc->leader_host, hostname) == 0;
    return pc->leader;
}

static void parse_peers(parse_ctx_t *ctx, veer_config_t *cfg, const cJSON *root, const jpath_t *at)
{
    static const char *const keys[] = {"admins", "token_file", "timeout", "retries", "refresh", "leader", NULL};
    const cJSON *obj = read_object(ctx, root, at, "peers", F_NULLABLE, keys);
    jpath_t p = path_key(at, "peers");
    veer_peers_config_t *out = &cfg->peers;
    out->leader = obj == NULL; /* a single replica leads */
    if (obj != NULL)
        parse_peers_leader(ctx, obj, &p, out);
    out->timeout_ms = read_duration(ctx, obj, &p, "timeout", 1, 2000);
    out->retries = (uint32_t)read_uint(ctx, obj, &p, "retries", 0, 100, 3);
    out->refresh_ms = read_duration(ctx, obj, &p, "refresh", 100, 5000);
    out->token_file = read_string(ctx, obj, &p, "token_file", F_NULLABLE, NULL);
    const cJSON *array = read_array(ctx, obj, &p, "admins", obj != NULL ? F_REQUIRED : 0);
    if (array == NULL)
        return;
    jpath_t ap = path_key(&p, "admins");
    if (cJSON_GetArraySize(array) > VEER_PEERS_MAX) {
        add_error(ctx, &ap, "at most %d peers, got %d", VEER_PEERS_MAX, cJSON_GetArraySize(array));
        return;
    }
    out->admins = alloc_items(ctx, &ap, array, sizeof *out->admins, &out->admin_count);
    if (out->admins == NULL)
        return;
    size_t i = 0;
    char got[64];
    for (const cJSON *item = array->child; item; item = item->next, i++) {
        jpath_t ip = path_index(&ap, i);
        if (!cJSON_IsString(item) || !valid_peer_address(item->valuestring)) {
            add_error(ctx, &ip, "expected a peer's admin address \"host:port\", got %s",
                      describe(item, got, sizeof got));
            continue;
        }
        for (size_t j = 0; j < i; j++)
            if (out->admins[j] != NULL && strcmp(out->admins[j], item->valuestring) == 0)
                add_error(ctx, &ip, "duplicate peer \"%s\" (also admins[%zu])", item->valuestring, j);
        if (cfg->admin.address != NULL && strcmp(cfg->admin.address, item->valuestring) == 0)
            add_error(ctx, &ip, "\"%s\" is this replica's own admin.address", item->valuestring);
        out->admins[i] = dup_string(ctx, &ip, item->valuestring);
    }
}

static void parse_access_log(parse_ctx_t *ctx, veer_config_t *cfg, const cJSON *root, const jpath_t *at)
{
    static const char *const keys[] = {"path", "format", "buffer_bytes", NULL};
    static const char *const formats[] = {"json", NULL};
    const cJSON *log = read_object(ctx, root, at, "access_log", 0, keys);
    jpath_t p = path_key(at, "access_log");
    cfg->access_log.path = read_string(ctx, log, &p, "path", F_NULLABLE, NULL);
    cfg->access_log.format = (veer_access_log_format_t)read_enum(ctx, log, &p, "format", formats, 0);
    cfg->access_log.buffer_bytes = read_uint(ctx, log, &p, "buffer_bytes", 16384, 67108864, 262144);
}

static void parse_trace(parse_ctx_t *ctx, veer_config_t *cfg, const cJSON *root, const jpath_t *at)
{
    static const char *const keys[] = {"sample_percent", NULL};
    const cJSON *obj = read_object(ctx, root, at, "trace", 0, keys);
    jpath_t p = path_key(at, "trace");
    cfg->trace.sample_percent = (uint32_t)read_uint(ctx, obj, &p, "sample_percent", 0, 100, 100);
}

static void parse_http2_limits(parse_ctx_t *ctx, const cJSON *limits, const jpath_t *at, veer_limits_config_t *out)
{
    static const char *const keys[] = {"max_concurrent_streams", "max_header_list_size", "initial_window_size",
                                       "connection_window_size", "header_table_size", "max_continuations",
                                       "reset_rate", "reset_burst", "max_settings_per_second",
                                       "max_pings_per_second", "max_empty_frames_per_second",
                                       "max_priority_per_second", NULL};
    const cJSON *obj = read_object(ctx, limits, at, "http2", 0, keys);
    jpath_t p = path_key(at, "http2");
    veer_http2_limits_t *h2 = &out->http2;
    h2->max_concurrent_streams = (uint32_t)read_uint(ctx, obj, &p, "max_concurrent_streams", 1, 10000, 100);
    h2->max_header_list_size =
        (uint32_t)read_uint(ctx, obj, &p, "max_header_list_size", 1024, 16777216, out->max_header_bytes);
    h2->initial_window_size = (uint32_t)read_uint(ctx, obj, &p, "initial_window_size", 1024, 2147483647, 65535);
    h2->connection_window_size =
        (uint32_t)read_uint(ctx, obj, &p, "connection_window_size", 65535, 2147483647, 1048576);
    h2->header_table_size = (uint32_t)read_uint(ctx, obj, &p, "header_table_size", 0, 65536, 4096);
    h2->max_continuations = (uint32_t)read_uint(ctx, obj, &p, "max_continuations", 0, 1024, 16);
    h2->reset_rate = (uint32_t)read_uint(ctx, obj, &p, "reset_rate", 1, 100000, 100);
    h2->reset_burst = (uint32_t)read_uint(ctx, obj, &p, "reset_burst", 1, 100000, 200);
    h2->max_settings_per_second = (uint32_t)read_uint(ctx, obj, &p, "max_settings_per_second", 1, 100000, 50);
    h2->max_pings_per_second = (uint32_t)read_uint(ctx, obj, &p, "max_pings_per_second", 1, 100000, 50);
    h2->max_empty_frames_per_second =
        (uint32_t)read_uint(ctx, obj, &p, "max_empty_frames_per_second", 1, 100000, 100);
    h2->max_priority_per_second = (uint32_t)read_uint(ctx, obj, &p, "max_priority_per_second", 1, 100000, 100);
}

static void parse_limits(parse_ctx_t *ctx, veer_config_t *cfg, const cJSON *root, const jpath_t *at)
{
    static const char *const keys[] = {"max_header_bytes", "max_body_bytes", "idle_timeout", "drain_timeout",
                                       "header_timeout", "max_connections", "buffer_bytes", "max_idle_upstream",
                                       "max_pipelined", "http2", NULL};
    const cJSON *obj = read_object(ctx, root, at, "limits", 0, keys);
    jpath_t p = path_key(at, "limits");
    veer_limits_config_t *out = &cfg->limits;
    out->max_header_bytes = read_uint(ctx, obj, &p, "max_header_bytes", 1024, 1048576, 65536);
    out->max_body_bytes = read_uint(ctx, obj, &p, "max_body_bytes", 0, MAX_SAFE_INT, 16777216);
    out->idle_timeout_ms = read_duration(ctx, obj, &p, "idle_timeout", 1, 60000);
    out->drain_timeout_ms = read_duration(ctx, obj, &p, "drain_timeout", 0, 30000);
    out->header_timeout_ms = read_duration(ctx, obj, &p, "header_timeout", 1, 10000);
    out->max_connections = read_uint(ctx, obj, &p, "max_connections", 1, 10000000, 10000);
    out->buffer_bytes = read_uint(ctx, obj, &p, "buffer_bytes", 4096, 16777216, 65536);
    out->max_idle_upstream = read_uint(ctx, obj, &p, "max_idle_upstream", 0, 65536, 1024);
    out->max_pipelined = read_uint(ctx, obj, &p, "max_pipelined", 1, 1024, 16);
    parse_http2_limits(ctx, obj, &p, out);
}

/* stats (stats.h, prom.h). The caps match histogram.h and stats.h, which
 * this file does not include so that it stays testable on its own. */
#define STATS_MAX_WINDOW_MS 3600000
#define STATS_MAX_BUCKETS 256
#define STATS_MAX_BUCKET_US 4294967295ull     /* VEER_HIST_MAX_VALUE: 4294.967295s */
#define STATS_MAX_WINDOW_BYTES 16776960       /* VEER_STATS_MAX_WINDOW_BYTES: 65535 pieces of 256 bytes */

static void parse_histogram_buckets(parse_ctx_t *ctx, const cJSON *obj, const jpath_t *at,
                                    veer_stats_config_t *out)
{
    const cJSON *array = read_array(ctx, obj, at, "histogram_buckets", 0);
    jpath_t p = path_key(at, "histogram_buckets");
    if (!array)
        return;
    size_t n = (size_t)cJSON_GetArraySize(array);
    if (n > STATS_MAX_BUCKETS) {
        add_error(ctx, &p, "at most %d buckets, got %zu", STATS_MAX_BUCKETS, n);
        return;
    }
    out->histogram_buckets_us = alloc_items(ctx, &p, array, sizeof *out->histogram_buckets_us,
                                            &out->histogram_bucket_count);
    if (!out->histogram_buckets_us)
        return;
    const cJSON *prev = NULL; /* the last valid bound */
    uint64_t prev_us = 0;
    size_t i = 0;
    for (const cJSON *item = array->child; item; item = item->next, i++) {
        jpath_t ip = path_index(&p, i);
        char got[64], before[64];
        uint64_t us;
        if (!cJSON_IsString(item) || veer_duration_parse_us(item->valuestring, &us) != 0) {
            add_error(ctx, &ip, "expected a duration such as \"250ms\" or \"100us\", got %s",
                      describe(item, got, sizeof got));
            continue;
        }
        if (us == 0 || us > STATS_MAX_BUCKET_US) {
            add_error(ctx, &ip, "must be between 1us and 4294s, got %s", describe(item, got, sizeof got));
            continue;
        }
        if (prev && us <= prev_us)
            add_error(ctx, &ip, "must be greater than the bound before it (%s), got %s",
                      describe(prev, before, sizeof before), describe(item, got, sizeof got));
        out->histogram_buckets_us[i] = us;
        prev = item;
        prev_us = us;
    }
}

static void parse_stats(parse_ctx_t *ctx, veer_config_t *cfg, const cJSON *root, const jpath_t *at)
{
    static const char *const keys[] = {"window", "histogram_buckets", "max_series", "max_window_bytes", NULL};
    const cJSON *obj = read_object(ctx, root, at, "stats", 0, keys);
    jpath_t p = path_key(at, "stats");
    veer_stats_config_t *out = &cfg->stats;
    uint64_t window_ms = read_duration(ctx, obj, &p, "window", 1000, 60000);
    jpath_t wp = path_key(&p, "window");
    if (window_ms % 1000 != 0) {
        add_error(ctx, &wp, "must be a whole number of seconds (the window is kept in 1-second slices)");
        window_ms = 60000;
    } else if (window_ms > STATS_MAX_WINDOW_MS) {
        add_error(ctx, &wp, "must be at most 1h");
        window_ms = 60000;
    }
    out->window_s = (uint32_t)(window_ms / 1000);
    parse_histogram_buckets(ctx, obj, &p, out);
    out->max_series = (uint32_t)read_uint(ctx, obj, &p, "max_series", 1, 1048576, 16384);
    out->max_window_bytes = read_uint(ctx, obj, &p, "max_window_bytes", 0, STATS_MAX_WINDOW_BYTES, 8388608);
}

static void parse_workers(parse_ctx_t *ctx, veer_config_t *cfg, const cJSON *root, const jpath_t *at)
{
    uint64_t workers = read_uint(ctx, root, at, "workers", 0, MAX_WORKERS, 0);
    if (workers == 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        workers = cpus < 1 ? 1 : cpus > MAX_WORKERS ? MAX_WORKERS : (uint64_t)cpus;
    }
    cfg->workers = (uint32_t)workers;
}

/* ---- clusters ------------------------------------------------------------ */

static void parse_endpoint(parse_ctx_t *ctx, const cJSON *item, const jpath_t *at, veer_endpoint_config_t *out)
{
    char got[64], host[256];
    struct in_addr v4;
    struct in6_addr v6;
    bool bracketed;
    if (!cJSON_IsString(item)) {
        add_error(ctx, at, "expected a \"host:port\" string, got %s", describe(item, got, sizeof got));
        return;
    }
    if (split_host_port(item->valuestring, host, sizeof host, &out->port, &bracketed) != 0) {
        add_error(ctx, at, "invalid endpoint %s " ENDPOINT_HINT, describe(item, got, sizeof got));
        return;
    }
    if (bracketed)
        out->is_literal = inet_pton(AF_INET6, host, &v6) == 1;
    else
        out->is_literal = inet_pton(AF_INET, host, &v4) == 1;
    if (!out->is_literal && (bracketed || !valid_dns_name(host))) {
        add_error(ctx, at, "invalid host in endpoint %s " ENDPOINT_HINT, describe(item, got, sizeof got));
        return;
    }
    out->host = dup_string(ctx, at, host);
}

static void parse_endpoints(parse_ctx_t *ctx, const cJSON *obj, const jpath_t *at, veer_cluster_config_t *out)
{
    const cJSON *array = read_array(ctx, obj, at, "endpoints", F_REQUIRED);
    jpath_t p = path_key(at, "endpoints");
    if (!array)
        return;
    out->endpoints = alloc_items(ctx, &p, array, sizeof *out->endpoints, &out->endpoint_count);
    if (!out->endpoints)
        return;
    size_t i = 0;
    for (const cJSON *item = array->child; item; item = item->next, i++) {
        jpath_t ip = path_index(&p, i);
        veer_endpoint_config_t *ep = &out->endpoints[i];
        parse_endpoint(ctx, item, &ip, ep);
        for (size_t j = 0; ep->host && j < i; j++) {
            const veer_endpoint_config_t *prev = &out->endpoints[j];
            if (prev->host && prev->port == ep->port && strcmp(prev->host, ep->host) == 0)
                add_error(ctx, &ip, "duplicate endpoint \"%s\" (also endpoints[%zu])", item->valuestring, j);
        }
    }
}

static veer_tls_cluster_config_t *parse_cluster_tls(parse_ctx_t *ctx, const cJSON *obj, const jpath_t *at,
                                                    bool required)
{
    static const char *const keys[] = {"ca", "sni", "cert", "key", "insecure_skip_verify", "session_reuse", NULL};
    const cJSON *tls = read_object(ctx, obj, at, "tls", F_NULLABLE, keys);
    jpath_t p = path_key(at, "tls");
    if (!tls && !required)
        return NULL;
    veer_tls_cluster_config_t *out = alloc_zeroed(ctx, &p, sizeof *out);
    if (!out)
        return NULL;
    out->ca = read_string(ctx, tls, &p, "ca", F_NULLABLE, NULL);
    out->sni = read_string(ctx, tls, &p, "sni", F_NULLABLE, NULL);
    out->cert = read_string(ctx, tls, &p, "cert", F_NULLABLE, NULL);
    out->key = read_string(ctx, tls, &p, "key", F_NULLABLE, NULL);
    out->insecure_skip_verify = read_bool(ctx, tls, &p, "insecure_skip_verify", false);
    out->session_reuse = read_bool(ctx, tls, &p, "session_reuse", true);
    if (!out->cert != !out->key) {
        jpath_t kp = path_key(&p, out->cert ? "key" : "cert");
        add_error(ctx, &kp, "required when %s is set (a client certificate needs both cert and key)",
                  out->cert ? "cert" : "key");
    }
    return out;
}

/* Exactly three digits: an HTTP status 100..599, else -1. */
static int status_digits(const char *s)
{
    for (int i = 0; i < 3; i++)
        if (s[i] < '0' || s[i] > '9')
            return -1;
    int v = (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
    return v >= 100 && v <= 599 ? v : -1;
}

/* 503, "503" or "500-504" (inclusive). */
static bool parse_status_item(const cJSON *item, veer_status_range_t *out)
{
    uint64_t v;
    if (json_to_uint(item, &v)) {
        if (v < 100 || v > 599)
            return false;
        out->lo = out->hi = (uint16_t)v;
        return true;
    }
    if (!cJSON_IsString(item))
        return false;
    const char *s = item->valuestring;
    int lo = status_digits(s), hi = lo;
    if (lo < 0)
        return false;
    if (s[3] == '-') {
        hi = status_digits(s + 4);
        if (hi < 0 || s[7] != '\0' || hi < lo)
            return false;
    } else if (s[3] != '\0') {
        return false;
    }
    out->lo = (uint16_t)lo;
    out->hi = (uint16_t)hi;
    return true;
}

/* obj[key]: a non-empty list of statuses and ranges, at most
 * VEER_STATUS_RANGES_MAX. Returns how many were stored in out (0 when absent). */
static size_t read_status_list(parse_ctx_t *ctx, const cJSON *obj, const jpath_t *at, const char *key,
                               veer_status_range_t *out)
{
    const cJSON *array = read_array(ctx, obj, at, key, 0);
    jpath_t p = path_key(at, key);
    size_t count = 0, i = 0;
    for (const cJSON *item = array ? array->child : NULL; item; item = item->next, i++) {
        jpath_t ip = path_index(&p, i);
        char got[64];
        veer_status_range_t range;
        if (!parse_status_item(item, &range)) {
            add_error(ctx, &ip, "expected a status 100..599 or a range such as \"200-399\", got %s",
                      describe(item, got, sizeof got));
        } else if (count == VEER_STATUS_RANGES_MAX) {
            add_error(ctx, &ip, "too many entries (at most %d)", VEER_STATUS_RANGES_MAX);
            break;
        } else {
            out[count++] = range;
        }
    }
    return count;
}

static veer_health_check_config_t *parse_health_check(parse_ctx_t *ctx, const cJSON *obj, const jpath_t *at,
                                                      veer_upstream_proto_t protocol)
{
    static const char *const keys[] = {"path", "interval", "timeout", "healthy_threshold", "unhealthy_threshold",
                                       "expected_statuses", "jitter", "require_initial_pass", "grpc_service",
                                       NULL};
    const cJSON *hc = read_object(ctx, obj, at, "health_check", F_NULLABLE, keys);
    if (!hc)
        return NULL;
    jpath_t p = path_key(at, "health_check");
    veer_health_check_config_t *out = alloc_zeroed(ctx, &p, sizeof *out);
    if (!out)
        return NULL;
    jpath_t path_path = path_key(&p, "path");
    out->grpc_service = read_string(ctx, hc, &p, "grpc_service", F_NULLABLE | F_ALLOW_EMPTY, NULL);
    jpath_t gp = path_key(&p, "grpc_service");
    if (out->grpc_service && strlen(out->grpc_service) > VEER_GRPC_SERVICE_MAX)
        add_error(ctx, &gp, "longer than %d bytes", VEER_GRPC_SERVICE_MAX);
    if (out->grpc_service && protocol == VEER_PROTO_HTTP1)
        add_error(ctx, &gp, "needs an HTTP/2 cluster (protocol \"h2c\" or \"h2\"), got protocol \"http1\"");
    if (out->grpc_service && lookup(hc, "expected_statuses")) {
        jpath_t ep = path_key(&p, "expected_statuses");
        add_error(ctx, &ep, "not used with grpc_service (a pass is :status 200, grpc-status 0, SERVING)");
    }
    out->path = read_string(ctx, hc, &p, "path", out->grpc_service ? 0 : F_REQUIRED, NULL);
    if (out->path && out->path[0] != '/')
        add_error(ctx, &path_path, "must start with '/', got \"%s\"", out->path);
    out->interval_ms = read_duration(ctx, hc, &p, "interval", 1, 5000);
    out->timeout_ms = read_duration(ctx, hc, &p, "timeout", 1, 1000);
    out->healthy_threshold = (uint32_t)read_uint(ctx, hc, &p, "healthy_threshold", 1, 1000, 2);
    out->unhealthy_threshold = (uint32_t)read_uint(ctx, hc, &p, "unhealthy_threshold", 1, 1000, 3);
    if (out->timeout_ms >= out->interval_ms) {
        char interval[32];
        jpath_t tp = path_key(&p, "timeout");
        add_error(ctx, &tp, "must be shorter than interval (%s)", format_ms(out->interval_ms, interval, sizeof interval));
    }
    out->jitter_ms = read_duration(ctx, hc, &p, "jitter", 0, out->interval_ms / 10);
    if (out->jitter_ms >= out->interval_ms) {
        char interval[32];
        jpath_t jp = path_key(&p, "jitter");
        add_error(ctx, &jp, "must be shorter than interval (%s)",
                  format_ms(out->interval_ms, interval, sizeof interval));
    }
    out->expected_status_count = read_status_list(ctx, hc, &p, "expected_statuses", out->expected_statuses);
    if (!lookup(hc, "expected_statuses")) {
        out->expected_statuses[0] = (veer_status_range_t){200, 399};
        out->expected_status_count = 1;
    }
    out->require_initial_pass = read_bool(ctx, hc, &p, "require_initial_pass", true);
    return out;
}

static veer_outlier_config_t *parse_outlier(parse_ctx_t *ctx, const cJSON *obj, const jpath_t *at)
{
    static const char *const keys[] = {"consecutive_5xx", "consecutive_gateway_failure", "interval",
                                       "base_ejection_time", "max_ejection_time", "max_ejection_percent",
                                       "success_rate_minimum_hosts", "success_rate_request_volume",
                                       "success_rate_stdev_factor", "consecutive_local_origin_failure",
                                       "enforcing_consecutive_5xx", "enforcing_consecutive_gateway_failure",
                                       "enforcing_consecutive_local_origin_failure", "enforcing_success_rate",
                                       "enforcing_failure_percentage", "failure_percentage_threshold",
                                       "failure_percentage_minimum_hosts", "failure_percentage_request_volume",
                                       "latency_p99_max", "latency_request_volume", "max_ejection_time_jitter",
                                       "successful_active_health_check_uneject_host", NULL};
    const cJSON *od = read_object(ctx, obj, at, "outlier_detection", F_NULLABLE, keys);
    if (!od)
        return NULL;
    jpath_t p = path_key(at, "outlier_detection");
    veer_outlier_config_t *out = alloc_zeroed(ctx, &p, sizeof *out);
    if (!out)
        return NULL;
    out->consecutive_5xx = (uint32_t)read_uint(ctx, od, &p, "consecutive_5xx", 0, 1000000, 5);
    out->consecutive_gateway_failure = (uint32_t)read_uint(ctx, od, &p, "consecutive_gateway_failure", 0, 1000000, 5);
    out->interval_ms = read_duration(ctx, od, &p, "interval", 1, 10000);
    out->base_ejection_time_ms = read_duration(ctx, od, &p, "base_ejection_time", 1, 30000);
    out->max_ejection_time_ms = read_duration(ctx, od, &p, "max_ejection_time", 1, 300000);
    out->max_ejection_percent = (uint32_t)read_uint(ctx, od, &p, "max_ejection_percent", 0, 100, 10);
    out->success_rate_minimum_hosts = (uint32_t)read_uint(ctx, od, &p, "success_rate_minimum_hosts", 0, 1000000, 5);
    out->success_rate_request_volume =
        (uint32_t)read_uint(ctx, od, &p, "success_rate_request_volume", 1, 1000000000, 100);
    out->success_rate_stdev_factor = read_number(ctx, od, &p, "success_rate_stdev_factor", 0, true, 100, 1.9);
    out->consecutive_local_origin_failure =
        (uint32_t)read_uint(ctx, od, &p, "consecutive_local_origin_failure", 0, 1000000, 5);
    out->enforcing_consecutive_5xx = (uint32_t)read_uint(ctx, od, &p, "enforcing_consecutive_5xx", 0, 100, 100);
    out->enforcing_consecutive_gateway_failure =
        (uint32_t)read_uint(ctx, od, &p, "enforcing_consecutive_gateway_failure", 0, 100, 100);
    out->enforcing_consecutive_local_origin_failure =
        (uint32_t)read_uint(ctx, od, &p, "enforcing_consecutive_local_origin_failure", 0, 100, 100);
    out->enforcing_success_rate = (uint32_t)read_uint(ctx, od, &p, "enforcing_success_rate", 0, 100, 100);
    out->enforcing_failure_percentage = (uint32_t)read_uint(ctx, od, &p, "enforcing_failure_percentage", 0, 100, 0);
    out->failure_percentage_threshold = (uint32_t)read_uint(ctx, od, &p, "failure_percentage_threshold", 0, 100, 85);
    out->failure_percentage_minimum_hosts =
        (uint32_t)read_uint(ctx, od, &p, "failure_percentage_minimum_hosts", 0, 1000000, 5);
    out->failure_percentage_request_volume =
        (uint32_t)read_uint(ctx, od, &p, "failure_percentage_request_volume", 1, 1000000000, 50);
    out->latency_p99_max_ms = read_duration(ctx, od, &p, "latency_p99_max", 0, 0);
    out->latency_request_volume = (uint32_t)read_uint(ctx, od, &p, "latency_request_volume", 1, 1000000000, 100);
    out->max_ejection_time_jitter_ms = read_duration(ctx, od, &p, "max_ejection_time_jitter", 0, 0);
    out->successful_active_health_check_uneject_host =
        read_bool(ctx, od, &p, "successful_active_health_check_uneject_host", true);
    if (out->max_ejection_time_ms < out->base_ejection_time_ms) {
        char base[32];
        jpath_t mp = path_key(&p, "max_ejection_time");
        add_error(ctx, &mp, "must not be shorter than base_ejection_time (%s)",
                  format_ms(out->base_ejection_time_ms, base, sizeof base));
    }
    return out;
}

static void parse_breakers(parse_ctx_t *ctx, const cJSON *obj, const jpath_t *at, veer_breaker_config_t *out)
{
    static const char *const keys[] = {"max_connections", "max_pending_requests", "max_requests", "max_retries",
                                       NULL};
    const cJSON *cb = read_object(ctx, obj, at, "circuit_breakers", 0, keys);
    jpath_t p = path_key(at, "circuit_breakers");
    out->max_connections = (uint32_t)read_uint(ctx, cb, &p, "max_connections", 1, 10000000, 1024);
    out->max_pending_requests = (uint32_t)read_uint(ctx, cb, &p, "max_pending_requests", 0, 10000000, 1024);
    out->max_requests = (uint32_t)read_uint(ctx, cb, &p, "max_requests", 1, 10000000, 1024);
    out->max_retries = (uint32_t)read_uint(ctx, cb, &p, "max_retries", 0, 10000000, 3);
}

static void parse_cluster(parse_ctx_t *ctx, const cJSON *obj, const jpath_t *at, veer_cluster_config_t *out)
{
    static const char *const keys[] = {"endpoints", "dns_refresh", "protocol", "lb", "connect_timeout", "tls",
                                       "health_check", "outlier_detection", "circuit_breakers",
                                       "max_streams_per_connection", "connections_per_endpoint",
                                       "panic_threshold", "failover", NULL};
    static const char *const protocols[] = {"http1", "h2c", "h2", NULL};
    static const char *const lbs[] = {"least_request", "round_robin", NULL};
    if (!expect_object(ctx, obj, at, keys))
        return;
    parse_endpoints(ctx, obj, at, out);
    out->dns_refresh_ms = read_duration(ctx, obj, at, "dns_refresh", 100, 5000);
    out->protocol = (veer_upstream_proto_t)read_enum(ctx, obj, at, "protocol", protocols, VEER_PROTO_HTTP1);
    out->lb = (veer_lb_t)read_enum(ctx, obj, at, "lb", lbs, VEER_LB_LEAST_REQUEST);
    out->connect_timeout_ms = read_duration(ctx, obj, at, "connect_timeout", 1, 1000);
    out->tls = parse_cluster_tls(ctx, obj, at, out->protocol == VEER_PROTO_H2);
    out->health_check = parse_health_check(ctx, obj, at, out->protocol);
    out->outlier_detection = parse_outlier(ctx, obj, at);
    parse_breakers(ctx, obj, at, &out->circuit_breakers);
    out->panic_threshold = (uint32_t)read_uint(ctx, obj, at, "panic_threshold", 0, 100, 50);
    out->max_streams_per_connection =
        (uint32_t)read_uint(ctx, obj, at, "max_streams_per_connection", 1, 1000000, 100);
    out->connections_per_endpoint = (uint32_t)read_uint(ctx, obj, at, "connections_per_endpoint", 1, 1024, 1);
}

static int read_cluster_ref(parse_ctx_t *ctx, const veer_config_t *cfg, const cJSON *obj, const jpath_t *at,
                            const char *key);

/* Names first (so routes can refer to a cluster whose body has errors without
 * a second, misleading error), then each cluster's body. */
static void parse_clusters(parse_ctx_t *ctx, veer_config_t *cfg, const cJSON *root, const jpath_t *at)
{
    const cJSON *obj = read_object(ctx, root, at, "clusters", F_REQUIRED, NULL);
    jpath_t p = path_key(at, "clusters");
    if (!obj)
        return;
    if (!obj->child) {
        add_error(ctx, &p, "expected at least one cluster, got an empty object");
        return;
    }
    cfg->clusters = alloc_items(ctx, &p, obj, sizeof *cfg->clusters, &cfg->cluster_count);
    if (!cfg->clusters)
        return;
    size_t i = 0;
    for (const cJSON *item = obj->child; item; item = item->next, i++) {
        jpath_t cp = path_key(&p, item->string);
        if (seen_before(obj, item))
            add_error(ctx, &cp, "duplicate cluster name");
        else
            check_name(ctx, &cp, item->string);
        /* kept even when invalid: routes naming it get no second error */
        cfg->clusters[i].name = dup_string(ctx, &cp, item->string);
    }
    i = 0;
    for (const cJSON *item = obj->child; item; item = item->next, i++) {
        jpath_t cp = path_key(&p, item->string);
        parse_cluster(ctx, item, &cp, &cfg->clusters[i]);
        cfg->clusters[i].failover = -1;
        if (cJSON_IsObject(item) && lookup(item, "failover") != NULL) {
            int f = read_cluster_ref(ctx, cfg, item, &cp, "failover");
            jpath_t fp = path_key(&cp, "failover");
            if (f == (int)i)
                add_error(ctx, &fp, "a cluster cannot fail over to itself");
            else
                cfg->clusters[i].failover = f;
        }
    }
}

/* ---- routes -------------------------------------------------------------- */

/* The index of the cluster named by obj[key], or -1 (reported). */
static int read_cluster_ref(parse_ctx_t *ctx, const veer_config_t *cfg, const cJSON *obj, const jpath_t *at,
                            const char *key)
{
    const cJSON *item = lookup(obj, key);
    jpath_t p = path_key(at, key);
    char got[64];
    if (!item) {
        add_error(ctx, &p, "required key is missing");
        return -1;
    }
    if (!cJSON_IsString(item)) {
        add_error(ctx, &p, "expected a cluster name, got %s", describe(item, got, sizeof got));
        return -1;
    }
    int index = veer_config_cluster_index(cfg, item->valuestring);
    if (index < 0 && cfg->cluster_count > 0)
        add_error(ctx, &p, "unknown cluster %s", describe(item, got, sizeof got));
    return index;
}

static void parse_header_match(parse_ctx_t *ctx, const cJSON *item, const jpath_t *at, veer_header_match_t *out)
{
    static const char *const keys[] = {"name", "exact", "prefix", "present", NULL};
    if (!expect_object(ctx, item, at, keys))
        return;
    jpath_t name_path = path_key(at, "name");
    out->name = read_string(ctx, item, at, "name", F_REQUIRED, NULL);
    if (out->name && !is_token(out->name))
        add_error(ctx, &name_path, "invalid header name \"%s\"", out->name);
    else if (out->name)
        to_lower(out->name);
    out->name_len = out->name ? strlen(out->name) : 0;
    int kinds = !!lookup(item, "exact") + !!lookup(item, "prefix") + !!lookup(item, "present");
    if (kinds != 1) {
        add_error(ctx, at, "expected exactly one of \"exact\", \"prefix\" or \"present\"");
        return;
    }
    if (lookup(item, "present")) {
        out->kind = VEER_HDR_MATCH_PRESENT;
        if (!read_bool(ctx, item, at, "present", true)) {
            jpath_t pp = path_key(at, "present");
            add_error(ctx, &pp, "must be true (matching an absent header is not supported)");
        }
        return;
    }
    out->kind = lookup(item, "exact") ? VEER_HDR_MATCH_EXACT : VEER_HDR_MATCH_PREFIX;
    out->value = read_string(ctx, item, at, out->kind == VEER_HDR_MATCH_EXACT ? "exact" : "prefix", F_ALLOW_EMPTY,
                             NULL);
    out->value_len = out->value ? strlen(out->value) : 0;
}

static void parse_match_headers(parse_ctx_t *ctx, const cJSON *match, const jpath_t *at, veer_route_match_t *out)
{
    const cJSON *array = read_array(ctx, match, at, "headers", F_NULLABLE | F_ALLOW_EMPTY);
    jpath_t p = path_key(at, "headers");
    if (!array)
        return;
    out->headers = alloc_items(ctx, &p, array, sizeof *out->headers, &out->header_count);
    size_t i = 0;
    for (const cJSON *item = array->child; out->headers && item; item = item->next, i++) {
        jpath_t ip = path_index(&p, i);
        parse_header_match(ctx, item, &ip, &out->headers[i]);
    }
}

static char *read_match_path(parse_ctx_t *ctx, const cJSON *match, const jpath_t *at, const char *key)
{
    jpath_t p = path_key(at, key);
    char *path = read_string(ctx, match, at, key, F_NULLABLE, NULL);
    if (path && path[0] != '/')
        add_error(ctx, &p, "must start with '/', got \"%s\"", path);
    return path;
}

static void parse_match(parse_ctx_t *ctx, const cJSON *route, const jpath_t *at, veer_route_match_t *out)
{
    static const char *const keys[] = {"host", "path_prefix", "path", "method", "headers", NULL};
    const cJSON *match = read_object(ctx, route, at, "match", F_NULLABLE, keys);
    if (!match)
        return;
    jpath_t p = path_key(at, "match");
    jpath_t host_path = path_key(&p, "host"), method_path = path_key(&p, "method");
    out->host = read_string(ctx, match, &p, "host", F_NULLABLE, NULL);
    if (out->host) {
        const char *bracket = strrchr(out->host, ']');
        if (strchr(bracket ? bracket : out->host, ':'))
            add_error(ctx, &host_path, "must not contain a port (the request's port is ignored), got \"%s\"",
                      out->host);
        to_lower(out->host);
    }
    out->path_prefix = read_match_path(ctx, match, &p, "path_prefix");
    out->path_exact = read_match_path(ctx, match, &p, "path");
    if (out->path_prefix && out->path_exact)
        add_error(ctx, &p, "\"path\" and \"path_prefix\" are mutually exclusive");
    out->method = read_string(ctx, match, &p, "method", F_NULLABLE, NULL);
    if (out->method && !is_token(out->method))
        add_error(ctx, &method_path, "invalid method \"%s\"", out->method);
    else if (out->method)
        to_upper(out->method);
    parse_match_headers(ctx, match, &p, out);
}

static void parse_split(parse_ctx_t *ctx, const veer_config_t *cfg, const cJSON *route, const jpath_t *at,
                        veer_route_config_t *out)
{
    static const char *const keys[] = {"cluster", "weight", NULL};
    const cJSON *array = read_array(ctx, route, at, "split", F_REQUIRED);
    jpath_t p = path_key(at, "split");
    if (!array)
        return;
    out->split = alloc_items(ctx, &p, array, sizeof *out->split, &out->split_count);
    if (!out->split)
        return;
    size_t errors_before = ctx->error_count, i = 0;
    uint64_t sum = 0;
    for (const cJSON *item = array->child; item; item = item->next, i++) {
        jpath_t ip = path_index(&p, i);
        veer_split_t *s = &out->split[i];
        s->cluster = -1;
        if (!expect_object(ctx, item, &ip, keys))
            continue;
        s->cluster = read_cluster_ref(ctx, cfg, item, &ip, "cluster");
        for (size_t j = 0; s->cluster >= 0 && j < i; j++) {
            if (out->split[j].cluster == s->cluster) {
                jpath_t cp = path_key(&ip, "cluster");
                add_error(ctx, &cp, "cluster \"%s\" appears more than once (also split[%zu])",
                          cfg->clusters[s->cluster].name, j);
            }
        }
        if (!lookup(item, "weight")) {
            jpath_t wp = path_key(&ip, "weight");
            add_error(ctx, &wp, "required key is missing");
        }
        s->weight = (uint32_t)read_uint(ctx, item, &ip, "weight", 0, 1000000, 0);
        sum += s->weight;
    }
    if (sum == 0 && ctx->error_count == errors_before)
        add_error(ctx, &p, "all weights are 0 (at least one cluster needs a positive weight)");
}

/* {"header" | "cookie": NAME, "equals": VALUE}: the rule of an override and of
 * an A/B canary's match. */
static void parse_key_rule(parse_ctx_t *ctx, const cJSON *item, const jpath_t *at, veer_override_t *out)
{
    bool has_header = lookup(item, "header"), has_cookie = lookup(item, "cookie");
    if (has_header == has_cookie) {
        add_error(ctx, at, "expected exactly one of \"header\" or \"cookie\"");
    } else {
        const char *key = has_header ? "header" : "cookie";
        jpath_t kp = path_key(at, key);
        out->kind = has_header ? VEER_KEY_HEADER : VEER_KEY_COOKIE;
        out->name = read_string(ctx, item, at, key, 0, NULL);
        if (out->name && !is_token(out->name))
            add_error(ctx, &kp, "invalid %s name \"%s\"", key, out->name);
        else if (out->name && has_header)
            to_lower(out->name);
        out->name_len = out->name ? strlen(out->name) : 0;
    }
    out->equals = read_string(ctx, item, at, "equals", F_REQUIRED | F_ALLOW_EMPTY, NULL);
    out->equals_len = out->equals ? strlen(out->equals) : 0;
}

static void parse_override(parse_ctx_t *ctx, const veer_config_t *cfg, const cJSON *item, const jpath_t *at,
                           veer_override_t *out)
{
    static const char *const keys[] = {"header", "cookie", "equals", "cluster", NULL};
    if (!expect_object(ctx, item, at, keys))
        return;
    parse_key_rule(ctx, item, at, out);
    out->cluster = read_cluster_ref(ctx, cfg, item, at, "cluster");
}

static void parse_overrides(parse_ctx_t *ctx, const veer_config_t *cfg, const cJSON *route, const jpath_t *at,
                            veer_route_config_t *out)
{
    const cJSON *array = read_array(ctx, route, at, "overrides", F_NULLABLE | F_ALLOW_EMPTY);
    jpath_t p = path_key(at, "overrides");
    if (!array)
        return;
    out->overrides = alloc_items(ctx, &p, array, sizeof *out->overrides, &out->override_count);
    size_t i = 0;
    for (const cJSON *item = array->child; out->overrides && item; item = item->next, i++) {
        jpath_t ip = path_index(&p, i);
        out->overrides[i].cluster = -1;
        parse_override(ctx, cfg, item, &ip, &out->overrides[i]);
    }
}

static void parse_sticky(parse_ctx_t *ctx, const cJSON *route, const jpath_t *at, veer_sticky_t *out)
{
    static const char *const keys[] = {"header", "cookie", "client_address", NULL};
    const cJSON *sticky = read_object(ctx, route, at, "sticky", F_NULLABLE, keys);
    if (!sticky)
        return;
    jpath_t p = path_key(at, "sticky");
    int kinds = !!lookup(sticky, "header") + !!lookup(sticky, "cookie") + !!lookup(sticky, "client_address");
    if (kinds != 1) {
        add_error(ctx, &p, "expected exactly one of \"header\", \"cookie\" or \"client_address\"");
        return;
    }
    out->enabled = true;
    if (lookup(sticky, "client_address")) {
        out->kind = VEER_KEY_CLIENT_ADDR;
        if (!read_bool(ctx, sticky, &p, "client_address", true)) {
            jpath_t cp = path_key(&p, "client_address");
            add_error(ctx, &cp, "must be true (omit \"sticky\" to disable it)");
        }
        return;
    }
    const char *key = lookup(sticky, "header") ? "header" : "cookie";
    jpath_t kp = path_key(&p, key);
    out->kind = strcmp(key, "header") == 0 ? VEER_KEY_HEADER : VEER_KEY_COOKIE;
    out->name = read_string(ctx, sticky, &p, key, 0, NULL);
    if (out->name && !is_token(out->name))
        add_error(ctx, &kp, "invalid %s name \"%s\"", key, out->name);
    else if (out->name && out->kind == VEER_KEY_HEADER)
        to_lower(out->name);
    out->name_len = out->name ? strlen(out->name) : 0;
}

static uint32_t parse_retry_on(parse_ctx_t *ctx, const cJSON *retry, const jpath_t *at)
{
    static const char *const names[] = {"connect-failure", "reset", "refused-stream", "5xx", "gateway-error", "503",
                                        "timeout", "retriable-status-codes", NULL};
    const cJSON *array = read_array(ctx, retry, at, "on", F_ALLOW_EMPTY);
    jpath_t p = path_key(at, "on");
    if (!lookup(retry, "on"))
        return VEER_RETRY_ON_CONNECT_FAILURE | VEER_RETRY_ON_REFUSED_STREAM;
    uint32_t bits = 0;
    size_t i = 0;
    for (const cJSON *item = array ? array->child : NULL; item; item = item->next, i++) {
        jpath_t ip = path_index(&p, i);
        int bit = -1;
        for (int n = 0; cJSON_IsString(item) && names[n]; n++)
            if (strcmp(item->valuestring, names[n]) == 0)
                bit = n;
        char got[64];
        if (bit < 0)
            add_error(ctx, &ip, "unknown retry condition %s (expected one of: connect-failure, reset, "
                      "refused-stream, 5xx, gateway-error, 503, timeout, retriable-status-codes)",
                      describe(item, got, sizeof got));
        else
            bits |= 1u << bit;
    }
    return bits;
}

static void parse_retry(parse_ctx_t *ctx, const cJSON *route, const jpath_t *at, veer_retry_config_t *out)
{
    static const char *const keys[] = {"attempts", "on", "per_try_timeout", "budget_percent", "min_retry_concurrency",
                                       "backoff_base", "backoff_max", "max_body_bytes", "retriable_status_codes",
                                       NULL};
    const cJSON *retry = read_object(ctx, route, at, "retry", 0, keys);
    jpath_t p = path_key(at, "retry");
    out->attempts = (uint32_t)read_uint(ctx, retry, &p, "attempts", 1, 10, 1);
    out->on = parse_retry_on(ctx, retry, &p);
    out->per_try_timeout_ms = read_duration(ctx, retry, &p, "per_try_timeout", 0, 0);
    out->budget_percent = (uint32_t)read_uint(ctx, retry, &p, "budget_percent", 0, 100, 20);
    out->min_retry_concurrency = (uint32_t)read_uint(ctx, retry, &p, "min_retry_concurrency", 0, 1000000, 3);
    out->backoff_base_ms = read_duration(ctx, retry, &p, "backoff_base", 1, 25);
    out->backoff_max_ms = read_duration(ctx, retry, &p, "backoff_max", 1, 250);
    if (out->backoff_max_ms < out->backoff_base_ms) {
        char base[32];
        jpath_t mp = path_key(&p, "backoff_max");
        add_error(ctx, &mp, "must not be shorter than backoff_base (%s)",
                  format_ms(out->backoff_base_ms, base, sizeof base));
    }
    out->max_body_bytes = read_uint(ctx, retry, &p, "max_body_bytes", 0, 1u << 30, 65536);
    out->retriable_status_count =
        read_status_list(ctx, retry, &p, "retriable_status_codes", out->retriable_status_codes);
    jpath_t sp = path_key(&p, "retriable_status_codes");
    if ((out->on & VEER_RETRY_ON_STATUS_CODES) && !lookup(retry, "retriable_status_codes"))
        add_error(ctx, &sp, "required when \"on\" lists \"retriable-status-codes\"");
    else if (!(out->on & VEER_RETRY_ON_STATUS_CODES) && lookup(retry, "retriable_status_codes"))
        add_error(ctx, &sp, "has no effect unless \"on\" lists \"retriable-status-codes\"");
}

/* gRPC status codes (0..16 defined, up to 255 accepted) that count as failures, as a bit set; codes above 30
 * share bit 31. Default: every code but 0 (OK). */
static uint32_t parse_failure_grpc_status(parse_ctx_t *ctx, const cJSON *route, const jpath_t *at)
{
    const cJSON *array = read_array(ctx, route, at, "failure_grpc_status", F_ALLOW_EMPTY);
    jpath_t p = path_key(at, "failure_grpc_status");
    if (!lookup(route, "failure_grpc_status"))
        return ~1u;
    uint32_t bits = 0;
    size_t i = 0;
    for (const cJSON *item = array ? array->child : NULL; item; item = item->next, i++) {
        jpath_t ip = path_index(&p, i);
        uint64_t code;
        char got[64];
        if (!json_to_uint(item, &code) || code > 255)
            add_error(ctx, &ip, "expected a gRPC status code 0..255, got %s", describe(item, got, sizeof got));
        else
            bits |= 1u << (code < 31 ? code : 31);
    }
    return bits;
}

static char *read_webhook(parse_ctx_t *ctx, const cJSON *hooks, const jpath_t *at, const char *key)
{
    jpath_t p = path_key(at, key);
    char *url = read_string(ctx, hooks, at, key, F_NULLABLE, NULL);
    if (url && strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0)
        add_error(ctx, &p, "expected an http:// or https:// URL, got \"%s\"", url);
    return url;
}

/* The keys of routes[].canary, also those of a start request's body. */
static const char *const canary_keys[] = {"stable", "canary", "mode", "interval", "step_weight", "step_weights",
                                          "max_weight", "promotion_step_weight", "threshold", "min_requests",
                                          "iterations", "mirror_iterations", "max_inconclusive", "success_rate_min",
                                          "p99_max", "compare_to_stable", "confidence", "p99_ratio_max", "match",
                                          "webhooks", "source", NULL};

/* What a canary block's absent keys mean (config/README.md). */
static const veer_canary_config_t canary_defaults = {
    .stable = -1, .canary = -1, .mode = VEER_CANARY_PROGRESSIVE, .interval_ms = 30000, .step_weight = 10,
    .max_weight = 50, .threshold = 5, .min_requests = 100, .iterations = 10, .max_inconclusive = 3,
    .success_rate_min = 99.0, .p99_max_ms = 500, .compare_to_stable = true, .confidence = 0.99,
    .p99_ratio_max = 1.5, .webhook_timeout_ms = 5000, .webhook_retries = 3, .source_timeout_ms = 2000,
};

static void free_canary_match(veer_canary_config_t *c)
{
    if (c->match) {
        free(c->match->name);
        free(c->match->equals);
        free(c->match);
        c->match = NULL;
    }
}

static void free_canary_phase_hooks(veer_canary_config_t *c)
{
    for (size_t i = 0; i < c->webhook_phase_change_count; i++)
        free(c->webhook_phase_change[i]);
    free(c->webhook_phase_change);
    c->webhook_phase_change = NULL;
    c->webhook_phase_change_count = 0;
}

void veer_config_canary_free(veer_canary_config_t *c)
{
    if (!c)
        return;
    free(c->step_weights);
    free_canary_match(c);
    free(c->webhook_promoted);
    free(c->webhook_rolled_back);
    free_canary_phase_hooks(c);
    free(c->webhook_confirm_promotion);
    free(c->source_prometheus);
    free(c);
}

static bool copy_optional_string(char **dst, const char *src)
{
    *dst = src ? strdup(src) : NULL;
    return !src || *dst;
}

/* A deep copy of src: the starting point that a block's keys then change. */
static veer_canary_config_t *canary_copy(parse_ctx_t *ctx, const jpath_t *at, const veer_canary_config_t *src)
{
    veer_canary_config_t *out = alloc_zeroed(ctx, at, sizeof *out);
    if (!out)
        return NULL;
    *out = *src;
    out->step_weights = NULL;
    out->step_weight_count = 0;
    out->match = NULL;
    out->webhook_phase_change = NULL;
    out->webhook_phase_change_count = 0;
    bool ok = copy_optional_string(&out->webhook_promoted, src->webhook_promoted);
    ok = copy_optional_string(&out->webhook_rolled_back, src->webhook_rolled_back) && ok;
    ok = copy_optional_string(&out->webhook_confirm_promotion, src->webhook_confirm_promotion) && ok;
    ok = copy_optional_string(&out->source_prometheus, src->source_prometheus) && ok;
    if (ok && src->step_weight_count) {
        out->step_weights = calloc(src->step_weight_count, sizeof *out->step_weights);
        ok = out->step_weights != NULL;
        if (ok) {
            memcpy(out->step_weights, src->step_weights, src->step_weight_count * sizeof *out->step_weights);
            out->step_weight_count = src->step_weight_count;
        }
    }
    if (ok && src->match) {
        out->match = calloc(1, sizeof *out->match);
        ok = out->match != NULL;
        if (ok) {
            *out->match = *src->match;
            ok = copy_optional_string(&out->match->name, src->match->name);
            ok = copy_optional_string(&out->match->equals, src->match->equals) && ok;
        }
    }
    if (ok && src->webhook_phase_change_count) {
        out->webhook_phase_change = calloc(src->webhook_phase_change_count, sizeof *out->webhook_phase_change);
        ok = out->webhook_phase_change != NULL;
        if (ok)
            out->webhook_phase_change_count = src->webhook_phase_change_count;
        for (size_t i = 0; ok && i < src->webhook_phase_change_count; i++)
            ok = copy_optional_string(&out->webhook_phase_change[i], src->webhook_phase_change[i]);
    }
    if (!ok) {
        add_oom(ctx, at);
        veer_config_canary_free(out);
        return NULL;
    }
    return out;
}

/* stable and canary are required unless out (copied from a base) has them. */
static void parse_canary_refs(parse_ctx_t *ctx, const veer_config_t *cfg, const cJSON *obj, const jpath_t *at,
                              veer_canary_config_t *out)
{
    if (out->stable < 0 || lookup(obj, "stable"))
        out->stable = read_cluster_ref(ctx, cfg, obj, at, "stable");
    if (out->canary < 0 || lookup(obj, "canary"))
        out->canary = read_cluster_ref(ctx, cfg, obj, at, "canary");
    if (out->stable >= 0 && out->stable == out->canary) {
        jpath_t p = path_key(at, "canary");
        add_error(ctx, &p, "must differ from stable (\"%s\")", cfg->clusters[out->stable].name);
    }
}

/* step_weights: a non-empty, strictly increasing list of weights 1..100. */
static void parse_step_weight_list(parse_ctx_t *ctx, const cJSON *obj, const jpath_t *at, veer_canary_config_t *out)
{
    const cJSON *array = read_array(ctx, obj, at, "step_weights", 0);
    jpath_t p = path_key(at, "step_weights");
    free(out->step_weights);
    out->step_weights = NULL;
    out->step_weight_count = 0;
    if (!array)
        return;
    size_t count = 0;
    uint32_t *steps = alloc_items(ctx, &p, array, sizeof *steps, &count);
    if (!steps)
        return;
    size_t i = 0;
    bool ok = true;
    for (const cJSON *item = array->child; item; item = item->next, i++) {
        jpath_t ip = path_index(&p, i);
        char got[64];
        uint64_t v;
        if (!json_to_uint(item, &v) || v < 1 || v > 100) {
            add_error(ctx, &ip, "expected an integer between 1 and 100, got %s", describe(item, got, sizeof got));
            ok = false;
        } else if (i > 0 && ok && v <= steps[i - 1]) {
            add_error(ctx, &ip, "must be greater than step_weights[%zu] (%" PRIu32 "), got %" PRIu64, i - 1,
                      steps[i - 1], v);
            ok = false;
        } else {
            steps[i] = (uint32_t)v;
        }
    }
    out->step_weights = steps;
    out->step_weight_count = count;
}

/* step_weight or step_weights, and max_weight: with a list, max_weight is its
 * last value (given or not), so a run's weights are the list exactly. */
static void parse_canary_steps(parse_ctx_t *ctx, const cJSON *obj, const jpath_t *at, veer_canary_config_t *out)
{
    bool has_step = lookup(obj, "step_weight"), has_list = lookup(obj, "step_weights");
    bool has_max = lookup(obj, "max_weight");
    out->step_weight = (uint32_t)read_uint(ctx, obj, at, "step_weight", 1, 100, out->step_weight);
    out->max_weight = (uint32_t)read_uint(ctx, obj, at, "max_weight", 1, 100, out->max_weight);
    if (has_step && has_list) {
        add_error(ctx, at, "\"step_weight\" and \"step_weights\" are mutually exclusive");
        return;
    }
    if (has_step) {
        free(out->step_weights);
        out->step_weights = NULL;
        out->step_weight_count = 0;
    }
    if (has_list)
        parse_step_weight_list(ctx, obj, at, out);
    if (out->step_weight_count) {
        uint32_t last = out->step_weights[out->step_weight_count - 1];
        if (!has_max) {
            out->max_weight = last;
        } else if (last != out->max_weight) {
            jpath_t lp = path_key(at, has_list ? "step_weights" : "max_weight");
            add_error(ctx, &lp, "the last of step_weights (%" PRIu32 ") must equal max_weight (%" PRIu32 ")", last,
                      out->max_weight);
        }
    } else if (out->step_weight > out->max_weight) {
        jpath_t sp = path_key(at, "step_weight");
        add_error(ctx, &sp, "must not exceed max_weight (%" PRIu32 ")", out->max_weight);
    }
}

static void parse_canary_match(parse_ctx_t *ctx, const cJSON *obj, const jpath_t *at, veer_canary_config_t *out)
{
    static const char *const keys[] = {"header", "cookie", "equals", NULL};
    if (!lookup(obj, "match"))
        return;
    free_canary_match(out);
    const cJSON *match = read_object(ctx, obj, at, "match", F_NULLABLE, keys);
    if (!match)
        return;
    jpath_t p = path_key(at, "match");
    out->match = alloc_zeroed(ctx, &p, sizeof *out->match);
    if (out->match)
        parse_key_rule(ctx, match, &p, out->match);
}

/* A webhook key present in hooks replaces the inherited URL (null clears it). */
static void replace_webhook(parse_ctx_t *ctx, const cJSON *hooks, const jpath_t *at, const char *key, char **url)
{
    if (!lookup(hooks, key))
        return;
    free(*url);
    *url = read_webhook(ctx, hooks, at, key);
}

static void parse_phase_hooks(parse_ctx_t *ctx, const cJSON *hooks, const jpath_t *at, veer_canary_config_t *out)
{
    if (!lookup(hooks, "phase_change"))
        return;
    free_canary_phase_hooks(out);
    const cJSON *array = read_array(ctx, hooks, at, "phase_change", F_NULLABLE | F_ALLOW_EMPTY);
    jpath_t p = path_key(at, "phase_change");
    if (!array)
        return;
    if (cJSON_GetArraySize(array) > VEER_CANARY_MAX_PHASE_HOOKS) {
        add_error(ctx, &p, "at most %d URLs, got %d", VEER_CANARY_MAX_PHASE_HOOKS, cJSON_GetArraySize(array));
        return;
    }
    out->webhook_phase_change = alloc_items(ctx, &p, array, sizeof *out->webhook_phase_change,
                                            &out->webhook_phase_change_count);
    size_t i = 0;
    for (const cJSON *item = array->child; out->webhook_phase_change && item; item = item->next, i++) {
        jpath_t ip = path_index(&p, i);
        char got[64];
        if (!cJSON_IsString(item) || has_control_char(item->valuestring) ||
            (strncmp(item->valuestring, "http://", 7) != 0 && strncmp(item->valuestring, "https://", 8) != 0))
            add_error(ctx, &ip, "expected an http:// or https:// URL, got %s", describe(item, got, sizeof got));
        else
            out->webhook_phase_change[i] = dup_string(ctx, &ip, item->valuestring);
    }
}

static void parse_canary_webhooks(parse_ctx_t *ctx, const cJSON *obj, const jpath_t *at, veer_canary_config_t *out)
{
    static const char *const keys[] = {"promoted", "rolled_back", "phase_change", "confirm_promotion", "timeout",
                                       "retries", NULL};
    const cJSON *item = lookup(obj, "webhooks");
    if (cJSON_IsNull(item)) {
        free(out->webhook_promoted);
        free(out->webhook_rolled_back);
        free(out->webhook_confirm_promotion);
        out->webhook_promoted = out->webhook_rolled_back = out->webhook_confirm_promotion = NULL;
        free_canary_phase_hooks(out);
    }
    const cJSON *hooks = read_object(ctx, obj, at, "webhooks", F_NULLABLE, keys);
    if (!hooks)
        return;
    jpath_t p = path_key(at, "webhooks");
    replace_webhook(ctx, hooks, &p, "promoted", &out->webhook_promoted);
    replace_webhook(ctx, hooks, &p, "rolled_back", &out->webhook_rolled_back);
    replace_webhook(ctx, hooks, &p, "confirm_promotion", &out->webhook_confirm_promotion);
    parse_phase_hooks(ctx, hooks, &p, out);
    out->webhook_timeout_ms = read_duration(ctx, hooks, &p, "timeout", 1, out->webhook_timeout_ms);
    out->webhook_retries = (uint32_t)read_uint(ctx, hooks, &p, "retries", 0, 10, out->webhook_retries);
}

/* source: {"prometheus": "http://host:port", "query_window", "timeout"}; null
 * goes back to this replica's own stats. Only http://: the query API is on the
 * cluster network, and a URL the client cannot use is refused here, not at
 * the first analysis. */
static void parse_canary_source(parse_ctx_t *ctx, const cJSON *obj, const jpath_t *at, veer_canary_config_t *out)
{
    static const char *const keys[] = {"prometheus", "query_window", "timeout", NULL};
    if (cJSON_IsNull(lookup(obj, "source"))) {
        free(out->source_prometheus);
        out->source_prometheus = NULL;
    }
    const cJSON *src = read_object(ctx, obj, at, "source", F_NULLABLE, keys);
    if (!src)
        return;
    jpath_t p = path_key(at, "source");
    jpath_t up = path_key(&p, "prometheus");
    char *url = read_string(ctx, src, &p, "prometheus", F_REQUIRED, NULL);
    if (url && (strncmp(url, "http://", 7) != 0 || url[7] == '\0' || url[7] == '/' || strchr(url, '?'))) {
        add_error(ctx, &up, "expected an http://host:port URL of the Prometheus server, got \"%s\"", url);
        free(url);
        url = NULL;
    }
    if (url) {
        free(out->source_prometheus);
        out->source_prometheus = url;
    }
    out->source_query_window_ms = read_duration(ctx, src, &p, "query_window", 1000, 0);
    out->source_timeout_ms = read_duration(ctx, src, &p, "timeout", 1, 2000);
}

/* Keys that only one mode uses are errors in another, so that a policy means
 * what it reads; an inherited A/B match is dropped when the mode changes. */
static void check_canary_mode(parse_ctx_t *ctx, const cJSON *obj, const jpath_t *at, veer_canary_config_t *out)
{
    jpath_t mp = path_key(at, "match");
    if (out->mode == VEER_CANARY_AB && !out->match && !lookup(obj, "match"))
        add_error(ctx, &mp, "required when mode is \"ab\" (e.g. {\"header\": \"x-canary\", \"equals\": \"1\"})");
    else if (out->mode == VEER_CANARY_AB && cJSON_IsNull(lookup(obj, "match")))
        add_error(ctx, &mp, "must not be null when mode is \"ab\"");
    if (out->mode != VEER_CANARY_AB && lookup(obj, "match") && !cJSON_IsNull(lookup(obj, "match")))
        add_error(ctx, &mp, "only used when mode is \"ab\"");
    else if (out->mode != VEER_CANARY_AB)
        free_canary_match(out);
    if (out->mode == VEER_CANARY_PROGRESSIVE && lookup(obj, "iterations")) {
        jpath_t ip = path_key(at, "iterations");
        add_error(ctx, &ip, "only used when mode is \"blue_green\" or \"ab\" (progressive runs until max_weight)");
    }
    if (out->match)
        out->match->cluster = out->canary;
}

/* Every key of obj changes out (a copy of the defaults or of a base). */
static void parse_canary_body(parse_ctx_t *ctx, const veer_config_t *cfg, const cJSON *obj, const jpath_t *at,
                              veer_canary_config_t *out)
{
    static const char *const modes[] = {"progressive", "blue_green", "ab", NULL};
    parse_canary_refs(ctx, cfg, obj, at, out);
    out->mode = (veer_canary_mode_t)read_enum(ctx, obj, at, "mode", modes, (int)out->mode);
    out->interval_ms = read_duration(ctx, obj, at, "interval", 100, out->interval_ms);
    parse_canary_steps(ctx, obj, at, out);
    out->promotion_step_weight =
        (uint32_t)read_uint(ctx, obj, at, "promotion_step_weight", 0, 100, out->promotion_step_weight);
    out->threshold = (uint32_t)read_uint(ctx, obj, at, "threshold", 1, 1000, out->threshold);
    out->min_requests = (uint32_t)read_uint(ctx, obj, at, "min_requests", 0, 1000000000, out->min_requests);
    out->iterations = (uint32_t)read_uint(ctx, obj, at, "iterations", 1, 1000, out->iterations);
    out->mirror_iterations = (uint32_t)read_uint(ctx, obj, at, "mirror_iterations", 0, 1000, out->mirror_iterations);
    out->max_inconclusive = (uint32_t)read_uint(ctx, obj, at, "max_inconclusive", 1, 1000, out->max_inconclusive);
    out->success_rate_min = read_number(ctx, obj, at, "success_rate_min", 0, false, 100, out->success_rate_min);
    out->p99_max_ms = read_duration(ctx, obj, at, "p99_max", 1, out->p99_max_ms);
    out->compare_to_stable = read_bool(ctx, obj, at, "compare_to_stable", out->compare_to_stable);
    out->confidence = read_number(ctx, obj, at, "confidence", 0.5, true, 0.999999, out->confidence);
    out->p99_ratio_max = read_number(ctx, obj, at, "p99_ratio_max", 1.0, false, 100, out->p99_ratio_max);
    parse_canary_source(ctx, obj, at, out);
    parse_canary_match(ctx, obj, at, out);
    parse_canary_webhooks(ctx, obj, at, out);
    check_canary_mode(ctx, obj, at, out);
}

static veer_canary_config_t *parse_canary(parse_ctx_t *ctx, const veer_config_t *cfg, const cJSON *route,
                                          const jpath_t *at)
{
    const cJSON *obj = read_object(ctx, route, at, "canary", F_NULLABLE, canary_keys);
    if (!obj)
        return NULL;
    jpath_t p = path_key(at, "canary");
    veer_canary_config_t *out = canary_copy(ctx, &p, &canary_defaults);
    if (out)
        parse_canary_body(ctx, cfg, obj, &p, out);
    return out;
}

veer_canary_config_t *veer_config_canary_parse(const veer_config_t *cfg, const veer_canary_config_t *base,
                                               const cJSON *body, veer_config_errors_t *errs)
{
    veer_config_errors_t local = {0};
    parse_ctx_t ctx = {errs ? errs : &local, 0};
    jpath_t at = {{0}};
    char got[64];
    veer_canary_config_t *out = NULL;
    if (!cfg) {
        add_error(&ctx, NULL, "no config");
    } else if (body && !cJSON_IsObject(body)) {
        add_error(&ctx, NULL, "expected a JSON object of canary policy keys, got %s", describe(body, got, sizeof got));
    } else {
        if (body)
            check_keys(&ctx, body, &at, canary_keys);
        out = canary_copy(&ctx, &at, base ? base : &canary_defaults);
        if (out)
            parse_canary_body(&ctx, cfg, body, &at, out);
    }
    if (ctx.error_count) {
        veer_config_canary_free(out);
        out = NULL;
    }
    veer_config_errors_clear(&local);
    return out;
}

static void parse_route(parse_ctx_t *ctx, const veer_config_t *cfg, const cJSON *item, const jpath_t *at,
                        veer_route_config_t *out)
{
    static const char *const keys[] = {"name", "match", "split", "overrides", "sticky", "timeout", "retry",
                                       "canary", "failure_grpc_status", NULL};
    if (!expect_object(ctx, item, at, keys))
        return;
    jpath_t name_path = path_key(at, "name");
    out->name = read_string(ctx, item, at, "name", F_REQUIRED, NULL);
    if (out->name && !check_name(ctx, &name_path, out->name)) {
        free(out->name);
        out->name = NULL;
    }
    parse_match(ctx, item, at, &out->match);
    parse_split(ctx, cfg, item, at, out);
    parse_overrides(ctx, cfg, item, at, out);
    parse_sticky(ctx, item, at, &out->sticky);
    out->timeout_ms = read_duration(ctx, item, at, "timeout", 0, 15000);
    parse_retry(ctx, item, at, &out->retry);
    out->canary = parse_canary(ctx, cfg, item, at);
    out->failure_grpc_status = parse_failure_grpc_status(ctx, item, at);
}

static void parse_routes(parse_ctx_t *ctx, veer_config_t *cfg, const cJSON *root, const jpath_t *at)
{
    const cJSON *array = read_array(ctx, root, at, "routes", F_REQUIRED);
    jpath_t p = path_key(at, "routes");
    if (!array)
        return;
    cfg->routes = alloc_items(ctx, &p, array, sizeof *cfg->routes, &cfg->route_count);
    if (!cfg->routes)
        return;
    size_t i = 0;
    for (const cJSON *item = array->child; item; item = item->next, i++) {
        jpath_t ip = path_index(&p, i);
        veer_route_config_t *r = &cfg->routes[i];
        parse_route(ctx, cfg, item, &ip, r);
        for (size_t j = 0; r->name && j < i; j++) {
            if (cfg->routes[j].name && strcmp(cfg->routes[j].name, r->name) == 0) {
                jpath_t np = path_key(&ip, "name");
                add_error(ctx, &np, "duplicate route name \"%s\" (also routes[%zu])", r->name, j);
            }
        }
    }
}

/* ---- document ------------------------------------------------------------ */

static void build_config(parse_ctx_t *ctx, veer_config_t *cfg, const cJSON *root)
{
    static const char *const keys[] = {"workers", "listeners", "admin", "peers", "state_file", "access_log", "trace",
                                       "limits", "stats", "clusters", "routes", NULL};
    jpath_t at = {{0}};
    char got[64];
    if (!cJSON_IsObject(root)) {
        add_error(ctx, NULL, "the config must be a JSON object, got %s", describe(root, got, sizeof got));
        return;
    }
    check_keys(ctx, root, &at, keys);
    parse_workers(ctx, cfg, root, &at);
    parse_listeners(ctx, cfg, root, &at);
    parse_admin(ctx, cfg, root, &at);
    parse_peers(ctx, cfg, root, &at);
    cfg->state_file = read_string(ctx, root, &at, "state_file", F_NULLABLE, NULL);
    parse_access_log(ctx, cfg, root, &at);
    parse_trace(ctx, cfg, root, &at);
    parse_limits(ctx, cfg, root, &at);
    parse_stats(ctx, cfg, root, &at);
    parse_clusters(ctx, cfg, root, &at);
    parse_routes(ctx, cfg, root, &at);
}

static void line_column(const char *text, size_t len, size_t offset, size_t *line, size_t *column)
{
    *line = 1;
    *column = 1;
    for (size_t i = 0; i < offset && i < len; i++) {
        (*column)++;
        if (text[i] == '\n') {
            (*line)++;
            *column = 1;
        }
    }
}

static void report_syntax_error(parse_ctx_t *ctx, const char *text, size_t len, size_t offset)
{
    size_t line, column;
    line_column(text, len, offset, &line, &column);
    size_t snippet = 0;
    while (offset + snippet < len && snippet < 20 && text[offset + snippet] != '\n' && text[offset + snippet] != '\r')
        snippet++;
    if (offset >= len || snippet == 0)
        add_error(ctx, NULL, "line %zu, column %zu: invalid JSON: unexpected end of input", line, column);
    else
        add_error(ctx, NULL, "line %zu, column %zu: invalid JSON near `%.*s`", line, column, (int)snippet,
                  text + offset);
}

/* cJSON wants a NUL-terminated buffer to reject trailing garbage. */
static cJSON *parse_json(parse_ctx_t *ctx, const char *text, size_t len)
{
    const char *nul = memchr(text, '\0', len);
    if (nul) {
        size_t line, column;
        line_column(text, len, (size_t)(nul - text), &line, &column);
        add_error(ctx, NULL, "line %zu, column %zu: invalid JSON: a NUL byte", line, column);
        return NULL;
    }
    char *copy = malloc(len + 1);
    if (!copy) {
        add_oom(ctx, NULL);
        return NULL;
    }
    memcpy(copy, text, len);
    copy[len] = '\0';
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(copy, len + 1, &end, 1);
    if (!root)
        report_syntax_error(ctx, text, len, end && end >= copy ? (size_t)(end - copy) : 0);
    free(copy);
    return root;
}

veer_config_t *veer_config_parse(const char *json_text, size_t len, veer_config_errors_t *errs)
{
    veer_config_errors_t local = {0};
    parse_ctx_t ctx = {errs ? errs : &local, 0};
    veer_config_t *cfg = NULL;
    cJSON *root = json_text ? parse_json(&ctx, json_text, len) : NULL;
    if (!json_text)
        add_error(&ctx, NULL, "no config text");
    if (root) {
        cfg = calloc(1, sizeof *cfg);
        if (cfg) {
            cfg->json = root;
            build_config(&ctx, cfg, root);
        } else {
            add_oom(&ctx, NULL);
            cJSON_Delete(root);
        }
    }
    if (ctx.error_count) {
        veer_config_free(cfg);
        cfg = NULL;
    }
    veer_config_errors_clear(&local);
    return cfg;
}

/* Reads the whole file (a pipe or /dev/stdin too), at most MAX_FILE_BYTES. */
static char *read_file(parse_ctx_t *ctx, const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        add_error(ctx, NULL, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 0, used = 0;
    char *buf = NULL;
    for (;;) {
        if (used == cap) {
            size_t new_cap = cap ? cap * 2 : 65536;
            char *grown = used < MAX_FILE_BYTES ? realloc(buf, new_cap) : NULL;
            if (!grown) {
                add_error(ctx, NULL, "%s: %s", path, used < MAX_FILE_BYTES ? "out of memory" : "file too large");
                break;
            }
            buf = grown;
            cap = new_cap;
        }
        size_t n = fread(buf + used, 1, cap - used, f);
        used += n;
        if (n == 0)
            break;
    }
    if (ferror(f))
        add_error(ctx, NULL, "%s: read error: %s", path, strerror(errno));
    fclose(f);
    *len = used;
    return buf;
}

veer_config_t *veer_config_load(const char *path, veer_config_errors_t *errs)
{
    veer_config_errors_t local = {0};
    parse_ctx_t ctx = {errs ? errs : &local, 0};
    size_t len = 0;
    char *text = path ? read_file(&ctx, path, &len) : NULL;
    if (!path)
        add_error(&ctx, NULL, "no config file given");
    veer_config_t *cfg = NULL;
    if (ctx.error_count == 0)
        cfg = veer_config_parse(text, len, ctx.errs);
    free(text);
    if (cfg) {
        cfg->path = strdup(path);
        if (!cfg->path) {
            add_error(&ctx, NULL, "%s: out of memory", path);
            veer_config_free(cfg);
            cfg = NULL;
        }
    }
    veer_config_errors_clear(&local);
    return cfg;
}

/* ---- lookups and free ---------------------------------------------------- */

int veer_config_cluster_index(const veer_config_t *cfg, const char *name)
{
    for (size_t i = 0; cfg && name && i < cfg->cluster_count; i++)
        if (cfg->clusters[i].name && strcmp(cfg->clusters[i].name, name) == 0)
            return (int)i;
    return -1;
}

bool veer_config_grpc_status_fails(uint32_t mask, int code)
{
    return (mask >> (code < 31 ? code : 31)) & 1;
}

int veer_config_route_index(const veer_config_t *cfg, const char *name)
{
    for (size_t i = 0; cfg && name && i < cfg->route_count; i++)
        if (cfg->routes[i].name && strcmp(cfg->routes[i].name, name) == 0)
            return (int)i;
    return -1;
}

static void free_listener(veer_listener_config_t *l)
{
    free(l->name);
    free(l->address);
    if (l->tls) {
        free(l->tls->cert);
        free(l->tls->key);
        for (size_t i = 0; i < l->tls->alpn_count; i++)
            free(l->tls->alpn[i]);
        free(l->tls->alpn);
        free(l->tls->client_ca);
        free(l->tls);
    }
}

static void free_cluster(veer_cluster_config_t *c)
{
    free(c->name);
    for (size_t i = 0; i < c->endpoint_count; i++)
        free(c->endpoints[i].host);
    free(c->endpoints);
    if (c->tls) {
        free(c->tls->ca);
        free(c->tls->sni);
        free(c->tls->cert);
        free(c->tls->key);
        free(c->tls);
    }
    if (c->health_check) {
        free(c->health_check->path);
        free(c->health_check->grpc_service);
    }
    free(c->health_check);
    free(c->outlier_detection);
}

static void free_route(veer_route_config_t *r)
{
    free(r->name);
    free(r->match.host);
    free(r->match.path_prefix);
    free(r->match.path_exact);
    free(r->match.method);
    for (size_t i = 0; i < r->match.header_count; i++) {
        free(r->match.headers[i].name);
        free(r->match.headers[i].value);
    }
    free(r->match.headers);
    free(r->split);
    for (size_t i = 0; i < r->override_count; i++) {
        free(r->overrides[i].name);
        free(r->overrides[i].equals);
    }
    free(r->overrides);
    free(r->sticky.name);
    veer_config_canary_free(r->canary);
}

void veer_config_free(veer_config_t *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; i < cfg->listener_count; i++)
        free_listener(&cfg->listeners[i]);
    free(cfg->listeners);
    free(cfg->admin.address);
    free(cfg->admin.token_file);
    for (size_t i = 0; i < cfg->peers.admin_count; i++)
        free(cfg->peers.admins[i]);
    free(cfg->peers.admins);
    free(cfg->peers.token_file);
    free(cfg->peers.leader_host);
    free(cfg->state_file);
    free(cfg->access_log.path);
    free(cfg->stats.histogram_buckets_us);
    for (size_t i = 0; i < cfg->cluster_count; i++)
        free_cluster(&cfg->clusters[i]);
    free(cfg->clusters);
    for (size_t i = 0; i < cfg->route_count; i++)
        free_route(&cfg->routes[i]);
    free(cfg->routes);
    cJSON_Delete(cfg->json);
    free(cfg->path);
    free(cfg);
}
