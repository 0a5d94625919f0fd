/* router.c - which route a request takes and which cluster serves it.
 *
 * Pure and allocation-free: every function reads the request through the
 * borrowed byte ranges of veer_route_input_t and the immutable config, takes
 * its randomness from the caller, and never touches a clock or a socket.
 * Nothing here calls into config.c, so the router links and tests alone. */
#include "router.h"

#include <netinet/in.h>
#include <stddef.h>
#include <string.h>

/* ---- byte helpers -------------------------------------------------------- */

static inline unsigned char ascii_lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + ('a' - 'A')) : c;
}

static bool bytes_eq_nocase(const char *a, const char *b, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (ascii_lower((unsigned char)a[i]) != ascii_lower((unsigned char)b[i]))
            return false;
    }
    return true;
}

static bool iov_eq_nocase(veer_iov_t a, const char *b, size_t b_len)
{
    return a.len == b_len && bytes_eq_nocase(a.base, b, b_len);
}

static bool iov_has_prefix(veer_iov_t a, const char *prefix, size_t prefix_len)
{
    return a.len >= prefix_len && (prefix_len == 0 || memcmp(a.base, prefix, prefix_len) == 0);
}

static inline bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* RFC 9110 §5.5: a field value carries no leading or trailing whitespace. The
 * codecs should already have trimmed it; trimming again costs nothing and
 * keeps matching right if one does not. */
static veer_iov_t trim_ows(veer_iov_t v)
{
    while (v.len > 0 && is_ows(v.base[0])) {
        v.base++;
        v.len--;
    }
    while (v.len > 0 && is_ows(v.base[v.len - 1]))
        v.len--;
    return v;
}

/* ---- host ---------------------------------------------------------------- */

/* Reduce an authority or a configured host to the bare, comparable host:
 * "[::1]:80" -> "::1", "Example.com:8080" -> "Example.com", "example.com." ->
 * "example.com". A bare IPv6 literal (several colons, no brackets: only a
 * config would say "::1") keeps its colons. Case is left to the compare. */
static veer_iov_t host_normalize(veer_iov_t h)
{
    if (h.len == 0)
        return h;
    if (h.base[0] == '[') {
        const char *close = memchr(h.base, ']', h.len);
        if (close == NULL)
            return h; /* malformed: compare as is, it will not match a real host */
        h.base++;
        h.len = (size_t)(close - h.base);
        return h;
    }
    const char *colon = memchr(h.base, ':', h.len);
    if (colon != NULL && memchr(colon + 1, ':', h.len - (size_t)(colon - h.base) - 1) == NULL)
        h.len = (size_t)(colon - h.base);
    if (h.len > 1 && h.base[h.len - 1] == '.')
        h.len--; /* the fully qualified form names the same host */
    return h;
}

static bool host_matches(const char *want, veer_iov_t authority)
{
    veer_iov_t w = host_normalize((veer_iov_t){want, strlen(want)});
    veer_iov_t a = host_normalize(authority);
    return a.len == w.len && bytes_eq_nocase(a.base, w.base, w.len);
}

/* ---- headers and cookies ------------------------------------------------- */

/* Request header names are lower-case by contract (http.h); the compare is
 * case-insensitive anyway so a codec slip cannot silently break routing. */
static bool header_name_is(const veer_header_t *h, const char *name, size_t name_len)
{
    return iov_eq_nocase(h->name, name, name_len);
}

static bool header_match_holds(const veer_header_match_t *m, const veer_route_input_t *in)
{
    for (size_t i = 0; i < in->header_count; i++) {
        const veer_header_t *h = &in->headers[i];
        if (!header_name_is(h, m->name, m->name_len))
            continue;
        veer_iov_t value = trim_ows(h->value);
        switch (m->kind) {
        case VEER_HDR_MATCH_PRESENT:
            return true;
        case VEER_HDR_MATCH_EXACT:
            if (veer_iov_eq(value, m->value, m->value_len))
                return true;
            break;
        case VEER_HDR_MATCH_PREFIX:
            if (iov_has_prefix(value, m->value, m->value_len))
                return true;
            break;
        }
    }
    return false;
}

bool veer_router_header(const veer_route_input_t *in, const char *name, size_t name_len, veer_iov_t *out)
{
    for (size_t i = 0; i < in->header_count; i++) {
        if (header_name_is(&in->headers[i], name, name_len)) {
            *out = trim_ows(in->headers[i].value);
            return true;
        }
    }
    return false;
}

/* Walks the cookie-pairs of every Cookie header (HTTP/2 splits them into one
 * header per pair, RFC 9113 §8.2.3; HTTP/1.1 sends one "a=1; b=2" line).
 * The state lets a caller visit every occurrence of a name, not just the first. */
typedef struct cookie_iter_s {
    const veer_route_input_t *in;
    size_t header;   /* index of the Cookie header being read */
    size_t offset;   /* position inside its value */
} cookie_iter_t;

static bool cookie_next(cookie_iter_t *it, veer_iov_t *name, veer_iov_t *value)
{
    const veer_route_input_t *in = it->in;
    for (; it->header < in->header_count; it->header++, it->offset = 0) {
        const veer_header_t *h = &in->headers[it->header];
        if (!header_name_is(h, "cookie", 6))
            continue;
        while (it->offset < h->value.len) {
            const char *start = h->value.base + it->offset;
            size_t rest = h->value.len - it->offset;
            const char *semi = memchr(start, ';', rest);
            size_t pair_len = semi ? (size_t)(semi - start) : rest;
            it->offset += pair_len + (semi ? 1 : 0);

            const char *eq = memchr(start, '=', pair_len);
            if (eq == NULL)
                continue; /* not a cookie-pair; browsers ignore these too */
            veer_iov_t n = trim_ows((veer_iov_t){start, (size_t)(eq - start)});
            veer_iov_t v = trim_ows((veer_iov_t){eq + 1, pair_len - (size_t)(eq - start) - 1});
            if (n.len == 0)
                continue;
            if (v.len >= 2 && v.base[0] == '"' && v.base[v.len - 1] == '"') {
                v.base++;
                v.len -= 2;
            }
            *name = n;
            *value = v;
            return true;
        }
    }
    return false;
}

bool veer_router_cookie(const veer_route_input_t *in, const char *name, size_t name_len, veer_iov_t *out)
{
    cookie_iter_t it = {in, 0, 0};
    veer_iov_t n, v;
    while (cookie_next(&it, &n, &v)) {
        if (veer_iov_eq(n, name, name_len)) {
            *out = v;
            return true;
        }
    }
    return false;
}

/* ---- match --------------------------------------------------------------- */

static veer_iov_t path_without_query(veer_iov_t path)
{
    if (path.len == 0)
        return path;
    const char *q = memchr(path.base, '?', path.len);
    if (q != NULL)
        path.len = (size_t)(q - path.base);
    return path;
}

static bool route_matches(const veer_route_match_t *m, const veer_route_input_t *in)
{
    if (m->method != NULL && !veer_iov_eq(in->method, m->method, strlen(m->method)))
        return false;
    if (m->path_exact != NULL) {
        veer_iov_t path = path_without_query(in->path);
        if (!veer_iov_eq(path, m->path_exact, strlen(m->path_exact)))
            return false;
    }
    if (m->path_prefix != NULL && !iov_has_prefix(in->path, m->path_prefix, strlen(m->path_prefix)))
        return false;
    if (m->host != NULL && !host_matches(m->host, in->authority))
        return false;
    for (size_t i = 0; i < m->header_count; i++) {
        if (!header_match_holds(&m->headers[i], in))
            return false;
    }
    return true;
}

int veer_router_match(const veer_config_t *cfg, const veer_route_input_t *in)
{
    for (size_t i = 0; i < cfg->route_count; i++) {
        if (route_matches(&cfg->routes[i].match, in))
            return (int)i;
    }
    return -1;
}

/* ---- pick ---------------------------------------------------------------- */

static bool override_holds(const veer_override_t *o, const veer_route_input_t *in)
{
    if (o->kind == VEER_KEY_HEADER) {
        for (size_t i = 0; i < in->header_count; i++) {
            const veer_header_t *h = &in->headers[i];
            if (header_name_is(h, o->name, o->name_len) &&
                veer_iov_eq(trim_ows(h->value), o->equals, o->equals_len))
                return true;
        }
        return false;
    }
    if (o->kind == VEER_KEY_COOKIE) {
        cookie_iter_t it = {in, 0, 0};
        veer_iov_t n, v;
        while (cookie_next(&it, &n, &v)) {
            if (veer_iov_eq(n, o->name, o->name_len) && veer_iov_eq(v, o->equals, o->equals_len))
                return true;
        }
    }
    return false;
}

/* The client's IP address without the port, so every connection of one
 * client hashes alike. An IPv4-mapped IPv6 address (a dual-stack listener)
 * hashes as the IPv4 address it carries. */
static bool client_addr_key(const struct sockaddr *sa, veer_iov_t *key)
{
    static const unsigned char v4_mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (sa == NULL)
        return false;
    /* Address bytes by offset: the caller's storage may be any sockaddr. */
    if (sa->sa_family == AF_INET) {
        const char *bytes = (const char *)sa + offsetof(struct sockaddr_in, sin_addr);
        *key = (veer_iov_t){bytes, sizeof(struct in_addr)};
        return true;
    }
    if (sa->sa_family == AF_INET6) {
        const char *bytes = (const char *)sa + offsetof(struct sockaddr_in6, sin6_addr);
        if (memcmp(bytes, v4_mapped, sizeof(v4_mapped)) == 0)
            *key = (veer_iov_t){bytes + sizeof(v4_mapped), 4};
        else
            *key = (veer_iov_t){bytes, sizeof(struct in6_addr)};
        return true;
    }
    return false; /* AF_UNIX and friends carry no client identity */
}

/* An empty key counts as absent: hashing "" would pin every request without
 * an id to one cluster, whatever the weights say. */
static bool sticky_key(const veer_sticky_t *sticky, const veer_route_input_t *in, veer_iov_t *key)
{
    bool found = false;
    switch (sticky->kind) {
    case VEER_KEY_HEADER:
        found = veer_router_header(in, sticky->name, sticky->name_len, key);
        break;
    case VEER_KEY_COOKIE:
        found = veer_router_cookie(in, sticky->name, sticky->name_len, key);
        break;
    case VEER_KEY_CLIENT_ADDR:
        found = client_addr_key(in->client_addr, key);
        break;
    }
    return found && key->len > 0;
}

/* floor(a * b / 2^32) for a < 2^32 and any 64-bit b, without a 128-bit type:
 * split b into 32-bit halves; the high half's product is already a multiple
 * of 2^32, so the result is exact. */
static uint64_t mul_shift32(uint32_t a, uint64_t b)
{
    return (uint64_t)a * (b >> 32) + (((uint64_t)a * (b & 0xffffffffu)) >> 32);
}

/* floor(bucket * total / VEER_STICKY_BUCKETS), exact and overflow-free for
 * any 64-bit total (same trick, in base VEER_STICKY_BUCKETS). */
static uint64_t bucket_to_point(uint32_t bucket, uint64_t total)
{
    uint64_t q = total / VEER_STICKY_BUCKETS, r = total % VEER_STICKY_BUCKETS;
    return (uint64_t)bucket * q + ((uint64_t)bucket * r) / VEER_STICKY_BUCKETS;
}

bool veer_router_override_holds(const veer_override_t *o, const veer_route_input_t *in)
{
    return override_holds(o, in);
}

int veer_router_pick(const veer_route_config_t *route, const veer_split_t *split, size_t split_count,
                     const veer_route_input_t *in, uint32_t random)
{
    for (size_t i = 0; i < route->override_count; i++) {
        if (override_holds(&route->overrides[i], in))
            return route->overrides[i].cluster; /* even when its weight is 0 */
    }

    uint64_t total = 0;
    for (size_t i = 0; i < split_count; i++)
        total += split[i].weight;
    if (total == 0)
        return -1;

    uint64_t point;
    veer_iov_t key;
    if (route->sticky.enabled && sticky_key(&route->sticky, in, &key))
        point = bucket_to_point(veer_router_sticky_bucket(key.base, key.len), total);
    else
        point = mul_shift32(random, total); /* uniform in [0, total), no modulo bias */

    /* Why this walk is monotone for the last entry: with stable weights
     * summing to S before the canary's weight w, a key with bucket b lands on
     * the canary iff floor(b * (S + w) / 10000) >= S, and since S is an
     * integer that is iff b / 10000 >= S / (S + w), i.e. iff the canary's
     * share w / (S + w) reaches 1 - b / 10000. The bucket never changes, so
     * whenever the canary's share grows (w up, or S down, or both) every key
     * already on the canary stays there; new keys join from the top of the
     * stable range. Putting the canary first instead would shift every
     * stable key's point on each step and reshuffle users between pools. */
    uint64_t cumulative = 0;
    for (size_t i = 0; i < split_count; i++) {
        cumulative += split[i].weight;
        if (point < cumulative)
            return split[i].cluster; /* an entry of weight 0 has an empty range */
    }
    return -1; /* unreachable: point < total */
}

/* FNV-1a 64 is cheap and stable across platforms and releases, but its low
 * bits mix poorly for short, similar keys ("user-1", "user-2"); murmur3's
 * fmix64 finalizer avalanches every input bit into every output bit before
 * the reduction. The function must never change: replicas and restarts must
 * put the same key in the same bucket (tests pin known values). */
uint32_t veer_router_sticky_bucket(const char *key, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)key[i];
        h *= 0x100000001b3ull;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return (uint32_t)(h % VEER_STICKY_BUCKETS);
}
