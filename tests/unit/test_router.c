/* test_router.c - route matching, cluster picking (overrides, weights, sticky
 * keys) and the sticky hash. Configs are built by hand: the router needs no
 * parser, and these tests must not wait for config.c. */
#include "router.h"

#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>

#include "check.h"

enum { BLUE = 0, GREEN = 1, CANARY = 2, N_CLUSTERS = 3 };

/* xorshift64 (Marsaglia), seeded: the high half is the 32-bit random value. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint32_t rng_next(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 32);
}

static veer_route_input_t request(const char *method, const char *path, const char *authority,
                                  const veer_header_t *headers, size_t header_count)
{
    veer_route_input_t in = {
        .method = iov_str(method),
        .path = iov_str(path),
        .authority = iov_str(authority),
        .headers = headers,
        .header_count = header_count,
        .client_addr = NULL,
    };
    return in;
}

/* ---- veer_router_match --------------------------------------------------- */

static void test_match(void)
{
    veer_header_match_t json_body[] = {
        {.name = "content-type", .name_len = 12, .kind = VEER_HDR_MATCH_PREFIX,
         .value = "application/json", .value_len = 16},
    };
    veer_header_match_t staging[] = {
        {.name = "x-env", .name_len = 5, .kind = VEER_HDR_MATCH_EXACT, .value = "staging", .value_len = 7},
    };
    veer_header_match_t flagged[] = {
        {.name = "x-flag", .name_len = 6, .kind = VEER_HDR_MATCH_PRESENT},
    };
    veer_header_match_t both[] = {
        {.name = "x-a", .name_len = 3, .kind = VEER_HDR_MATCH_EXACT, .value = "1", .value_len = 1},
        {.name = "x-b", .name_len = 3, .kind = VEER_HDR_MATCH_PRESENT},
    };
    veer_route_config_t routes[] = {
        /* 0 */ {.name = "host", .match = {.host = "api.example.com", .path_prefix = "/v1/"}},
        /* 1 */ {.name = "exact", .match = {.path_exact = "/exact"}},
        /* 2 */ {.name = "post", .match = {.method = "POST", .path_prefix = "/post"}},
        /* 3 */ {.name = "json", .match = {.path_prefix = "/hdr", .headers = json_body, .header_count = 1}},
        /* 4 */ {.name = "env", .match = {.path_prefix = "/env", .headers = staging, .header_count = 1}},
        /* 5 */ {.name = "flag", .match = {.path_prefix = "/flag", .headers = flagged, .header_count = 1}},
        /* 6 */ {.name = "v6", .match = {.host = "[::1]", .path_prefix = "/v6"}},
        /* 7 */ {.name = "both", .match = {.path_prefix = "/both", .headers = both, .header_count = 2}},
        /* 8 */ {.name = "v1-any-host", .match = {.path_prefix = "/v1/"}},
        /* 9 */ {.name = "bare-v6", .match = {.host = "::2", .path_prefix = "/v6"}},
        /* 10 */ {.name = "catch-all", .match = {.path_prefix = "/"}},
    };
    veer_config_t cfg = {.routes = routes, .route_count = N_ELEMS(routes)};
    const int CATCH_ALL = 10;
    veer_route_input_t in;

#define MATCH0(method, path, authority) \
    (in = request((method), (path), (authority), NULL, 0), veer_router_match(&cfg, &in))
#define MATCH(method, path, authority, hdrs) \
    (in = request((method), (path), (authority), (hdrs), N_ELEMS(hdrs)), veer_router_match(&cfg, &in))

    /* Host: case, port, trailing dot; first match wins over later routes. */
    CHECK(MATCH0("GET", "/v1/embed", "api.example.com") == 0);
    CHECK(MATCH0("GET", "/v1/embed", "API.Example.COM") == 0);
    CHECK(MATCH0("GET", "/v1/embed", "api.example.com:8443") == 0);
    CHECK(MATCH0("GET", "/v1/embed", "api.example.com.") == 0);
    CHECK(MATCH0("GET", "/v1/embed", "api.example.com.:80") == 0);
    CHECK(MATCH0("GET", "/v1/embed", "api.example.com:") == 0);
    CHECK(MATCH0("GET", "/v1/embed", "other.example.com") == 8);
    CHECK(MATCH0("GET", "/v1/embed", "api.example.com.evil") == 8);
    CHECK(MATCH0("GET", "/v1/embed", "xapi.example.com") == 8);
    CHECK(MATCH0("GET", "/v1/embed", "api.example.co") == 8);
    CHECK(MATCH0("GET", "/v1/embed", "") == 8);
    /* IPv6 literals: brackets and port stripped on both sides. */
    CHECK(MATCH0("GET", "/v6/x", "[::1]:8080") == 6);
    CHECK(MATCH0("GET", "/v6/x", "[::1]") == 6);
    CHECK(MATCH0("GET", "/v6/x", "[::2]:80") == 9);
    CHECK(MATCH0("GET", "/v6/x", "[::3]:80") == CATCH_ALL);
    CHECK(MATCH0("GET", "/v6/x", "[::1") == CATCH_ALL);

    /* Path prefix is a byte prefix of the path, query included. */
    CHECK(MATCH0("GET", "/v1/", "api.example.com") == 0);
    CHECK(MATCH0("GET", "/v1", "api.example.com") == CATCH_ALL);
    CHECK(MATCH0("GET", "/v1?x=/v1/", "api.example.com") == CATCH_ALL);
    CHECK(MATCH0("GET", "/V1/embed", "api.example.com") == CATCH_ALL);
    /* Exact path ignores the query string, nothing else. */
    CHECK(MATCH0("GET", "/exact", "h") == 1);
    CHECK(MATCH0("GET", "/exact?x=1", "h") == 1);
    CHECK(MATCH0("GET", "/exact?", "h") == 1);
    CHECK(MATCH0("GET", "/exact/", "h") == CATCH_ALL);
    CHECK(MATCH0("GET", "/exactly", "h") == CATCH_ALL);
    CHECK(MATCH0("GET", "/exac", "h") == CATCH_ALL);

    /* Method: exact, case-sensitive (RFC 9110 §9.1). */
    CHECK(MATCH0("POST", "/post", "h") == 2);
    CHECK(MATCH0("GET", "/post", "h") == CATCH_ALL);
    CHECK(MATCH0("post", "/post", "h") == CATCH_ALL);
    CHECK(MATCH0("POSTX", "/post", "h") == CATCH_ALL);

    /* Header prefix. */
    const veer_header_t json_utf8[] = {HDR("content-type", "application/json; charset=utf-8")};
    const veer_header_t json_plain[] = {HDR("accept", "*/*"), HDR("content-type", "application/json")};
    const veer_header_t text[] = {HDR("content-type", "text/plain")};
    const veer_header_t json_wrong_name[] = {HDR("accept", "application/json")};
    CHECK(MATCH("POST", "/hdr", "h", json_utf8) == 3);
    CHECK(MATCH("POST", "/hdr", "h", json_plain) == 3);
    CHECK(MATCH("POST", "/hdr", "h", text) == CATCH_ALL);
    CHECK(MATCH("POST", "/hdr", "h", json_wrong_name) == CATCH_ALL);
    CHECK(MATCH0("POST", "/hdr", "h") == CATCH_ALL);

    /* Header exact, and a repeated header matches if any occurrence holds. */
    const veer_header_t env_staging[] = {HDR("x-env", "staging")};
    const veer_header_t env_longer[] = {HDR("x-env", "staging2")};
    const veer_header_t env_shorter[] = {HDR("x-env", "stag")};
    const veer_header_t env_case[] = {HDR("x-env", "Staging")};
    const veer_header_t env_repeated[] = {HDR("x-env", "prod"), HDR("x-other", "staging"),
                                          HDR("x-env", "staging")};
    const veer_header_t env_repeated_none[] = {HDR("x-env", "prod"), HDR("x-env", "dev")};
    const veer_header_t env_ows[] = {HDR("x-env", " staging\t")};
    CHECK(MATCH("GET", "/env", "h", env_staging) == 4);
    CHECK(MATCH("GET", "/env", "h", env_longer) == CATCH_ALL);
    CHECK(MATCH("GET", "/env", "h", env_shorter) == CATCH_ALL);
    CHECK(MATCH("GET", "/env", "h", env_case) == CATCH_ALL);
    CHECK(MATCH("GET", "/env", "h", env_repeated) == 4);
    CHECK(MATCH("GET", "/env", "h", env_repeated_none) == CATCH_ALL);
    CHECK(MATCH("GET", "/env", "h", env_ows) == 4);

    /* Header present, even with an empty value. */
    const veer_header_t flag_empty[] = {HDR("x-flag", "")};
    const veer_header_t flag_set[] = {HDR("a", "b"), HDR("x-flag", "1")};
    const veer_header_t flag_other[] = {HDR("x-flags", "1")};
    CHECK(MATCH("GET", "/flag", "h", flag_empty) == 5);
    CHECK(MATCH("GET", "/flag", "h", flag_set) == 5);
    CHECK(MATCH("GET", "/flag", "h", flag_other) == CATCH_ALL);

    /* Several header conditions: all must hold. */
    const veer_header_t ab[] = {HDR("x-b", ""), HDR("x-a", "1")};
    const veer_header_t a_only[] = {HDR("x-a", "1")};
    const veer_header_t b_only[] = {HDR("x-b", "1")};
    CHECK(MATCH("GET", "/both", "h", ab) == 7);
    CHECK(MATCH("GET", "/both", "h", a_only) == CATCH_ALL);
    CHECK(MATCH("GET", "/both", "h", b_only) == CATCH_ALL);

    /* No match is -1 (a 404). */
    veer_config_t only_host = {.routes = routes, .route_count = 1};
    in = request("GET", "/v2/embed", "api.example.com", NULL, 0);
    CHECK(veer_router_match(&only_host, &in) == -1);
    in = request("GET", "/v1/embed", "other", NULL, 0);
    CHECK(veer_router_match(&only_host, &in) == -1);
    veer_config_t empty = {.routes = NULL, .route_count = 0};
    CHECK(veer_router_match(&empty, &in) == -1);
    /* An empty match holds for everything. */
    veer_route_config_t any = {.name = "any"};
    veer_config_t match_all = {.routes = &any, .route_count = 1};
    in = request("", "", "", NULL, 0);
    CHECK(veer_router_match(&match_all, &in) == 0);
#undef MATCH0
#undef MATCH
}

/* ---- veer_router_header / veer_router_cookie ------------------------------ */

static void test_header_and_cookie_lookup(void)
{
    const veer_header_t h[] = {
        HDR("x-user-id", "  u1 "),
        HDR("cookie", "session=abc; veer-pool=green;theme=dark"),
        HDR("x-user-id", "u2"),
        HDR("cookie", " lang = \"en\" ;junk; =nameless; empty=; quoted=\"\"; q1=\"x"),
        HDR("cookie", ""),
        HDR("cookie", "session=second"),
    };
    veer_route_input_t in = request("GET", "/", "h", h, N_ELEMS(h));
    veer_iov_t v;

    CHECK(veer_router_header(&in, "x-user-id", 9, &v) && iov_is(v, "u1"));
    CHECK(!veer_router_header(&in, "x-user", 6, &v));
    CHECK(veer_router_cookie(&in, "session", 7, &v) && iov_is(v, "abc"));
    CHECK(veer_router_cookie(&in, "veer-pool", 9, &v) && iov_is(v, "green"));
    CHECK(veer_router_cookie(&in, "theme", 5, &v) && iov_is(v, "dark"));
    CHECK(veer_router_cookie(&in, "lang", 4, &v) && iov_is(v, "en"));
    CHECK(veer_router_cookie(&in, "empty", 5, &v) && v.len == 0);
    CHECK(veer_router_cookie(&in, "quoted", 6, &v) && v.len == 0);
    CHECK(veer_router_cookie(&in, "q1", 2, &v) && iov_is(v, "\"x")); /* unbalanced: kept */
    CHECK(!veer_router_cookie(&in, "junk", 4, &v));
    CHECK(!veer_router_cookie(&in, "Session", 7, &v)); /* names compare exactly */
    CHECK(!veer_router_cookie(&in, "sess", 4, &v));
    CHECK(!veer_router_cookie(&in, "", 0, &v));

    veer_route_input_t bare = request("GET", "/", "h", NULL, 0);
    CHECK(!veer_router_cookie(&bare, "session", 7, &v));
    CHECK(!veer_router_header(&bare, "cookie", 6, &v));
}

/* ---- veer_router_pick: weights -------------------------------------------- */

static void pick_counts(const veer_route_config_t *route, const veer_split_t *split, size_t n,
                        const veer_route_input_t *in, int picks, int counts[N_CLUSTERS + 1])
{
    memset(counts, 0, sizeof(int) * (N_CLUSTERS + 1));
    for (int i = 0; i < picks; i++) {
        int c = veer_router_pick(route, split, n, in, rng_next());
        counts[(c >= 0 && c < N_CLUSTERS) ? c : N_CLUSTERS]++;
    }
}

static bool share_near(int count, int total, double want, double tolerance)
{
    return fabs((double)count / total - want) <= tolerance;
}

static void test_weights(void)
{
    veer_route_config_t route = {.name = "r"};
    veer_route_input_t in = request("GET", "/", "h", NULL, 0);
    int counts[N_CLUSTERS + 1];
    const int picks = 100000;

    veer_split_t s90_10[] = {{BLUE, 90}, {CANARY, 10}};
    pick_counts(&route, s90_10, 2, &in, picks, counts);
    CHECK(share_near(counts[BLUE], picks, 0.90, 0.01));
    CHECK(share_near(counts[CANARY], picks, 0.10, 0.01));
    CHECK(counts[GREEN] == 0 && counts[N_CLUSTERS] == 0);

    veer_split_t s50_30_20[] = {{BLUE, 50}, {GREEN, 30}, {CANARY, 20}};
    pick_counts(&route, s50_30_20, 3, &in, picks, counts);
    CHECK(share_near(counts[BLUE], picks, 0.50, 0.01));
    CHECK(share_near(counts[GREEN], picks, 0.30, 0.01));
    CHECK(share_near(counts[CANARY], picks, 0.20, 0.01));
    CHECK(counts[N_CLUSTERS] == 0);

    /* Relative weights: 9000/1000 is 90/10. */
    veer_split_t big[] = {{BLUE, 9000}, {CANARY, 1000}};
    pick_counts(&route, big, 2, &in, picks, counts);
    CHECK(share_near(counts[CANARY], picks, 0.10, 0.01));

    /* A weight of 0 sends nothing, wherever it sits in the list. */
    veer_split_t zero_mid[] = {{BLUE, 50}, {GREEN, 0}, {CANARY, 50}};
    pick_counts(&route, zero_mid, 3, &in, picks, counts);
    CHECK(counts[GREEN] == 0 && counts[BLUE] > 0 && counts[CANARY] > 0);
    veer_split_t zero_ends[] = {{GREEN, 0}, {BLUE, 1}, {CANARY, 0}};
    pick_counts(&route, zero_ends, 3, &in, picks, counts);
    CHECK(counts[BLUE] == picks);
    /* The extremes of random land on the first and last non-zero entries. */
    CHECK(veer_router_pick(&route, zero_mid, 3, &in, 0) == BLUE);
    CHECK(veer_router_pick(&route, zero_mid, 3, &in, UINT32_MAX) == CANARY);
    CHECK(veer_router_pick(&route, zero_ends, 3, &in, 0) == BLUE);
    CHECK(veer_router_pick(&route, zero_ends, 3, &in, UINT32_MAX) == BLUE);

    /* All zero (or no split at all): no cluster. */
    veer_split_t all_zero[] = {{BLUE, 0}, {CANARY, 0}};
    CHECK(veer_router_pick(&route, all_zero, 2, &in, 0) == -1);
    CHECK(veer_router_pick(&route, all_zero, 2, &in, 12345) == -1);
    CHECK(veer_router_pick(&route, all_zero, 2, &in, UINT32_MAX) == -1);
    CHECK(veer_router_pick(&route, NULL, 0, &in, 7) == -1);

    /* Totals beyond 32 bits stay exact: three entries of UINT32_MAX, and the
     * boundary between the first two sits between random 1431655765 and
     * 1431655766 (floor(r * 3 * (2^32 - 1) / 2^32) vs 2^32 - 1). */
    veer_split_t huge[] = {{BLUE, UINT32_MAX}, {GREEN, UINT32_MAX}, {CANARY, UINT32_MAX}};
    CHECK(veer_router_pick(&route, huge, 3, &in, 0) == BLUE);
    CHECK(veer_router_pick(&route, huge, 3, &in, 1431655765u) == BLUE);
    CHECK(veer_router_pick(&route, huge, 3, &in, 1431655766u) == GREEN);
    CHECK(veer_router_pick(&route, huge, 3, &in, UINT32_MAX) == CANARY);
    pick_counts(&route, huge, 3, &in, picks, counts);
    CHECK(share_near(counts[GREEN], picks, 1.0 / 3, 0.01));
}

/* ---- veer_router_pick: overrides ------------------------------------------ */

static void test_overrides(void)
{
    veer_override_t overrides[] = {
        {.kind = VEER_KEY_HEADER, .name = "x-canary", .name_len = 8, .equals = "always", .equals_len = 6,
         .cluster = CANARY},
        {.kind = VEER_KEY_COOKIE, .name = "veer-pool", .name_len = 9, .equals = "green", .equals_len = 5,
         .cluster = GREEN},
    };
    veer_route_config_t route = {.name = "r", .overrides = overrides, .override_count = 2};
    /* The override targets have weight 0 (green is not in the split at all). */
    veer_split_t split[] = {{BLUE, 100}, {CANARY, 0}};
    veer_split_t all_zero[] = {{BLUE, 0}, {CANARY, 0}};
    int counts[N_CLUSTERS + 1];

#define PICKS_ALL(hdrs, want)                                                          \
    do {                                                                               \
        veer_route_input_t in_ = request("GET", "/", "h", (hdrs), N_ELEMS(hdrs));      \
        pick_counts(&route, split, 2, &in_, 1000, counts);                             \
        CHECK(counts[(want)] == 1000);                                                 \
    } while (0)

    const veer_header_t hdr_always[] = {HDR("x-canary", "always")};
    const veer_header_t hdr_never[] = {HDR("x-canary", "never")};
    const veer_header_t hdr_prefix[] = {HDR("x-canary", "always-not")};
    const veer_header_t hdr_repeated[] = {HDR("x-canary", "no"), HDR("x-canary", "always")};
    const veer_header_t cookie_mid[] = {HDR("cookie", "session=abc; veer-pool=green; theme=dark")};
    const veer_header_t cookie_split[] = {HDR("cookie", "session=abc"), HDR("cookie", "theme=dark"),
                                          HDR("cookie", "veer-pool=green")};
    const veer_header_t cookie_quoted[] = {HDR("cookie", "a=1;veer-pool=\"green\"")};
    const veer_header_t cookie_spaces[] = {HDR("cookie", "a=1 ;\t veer-pool = green ; b=2")};
    const veer_header_t cookie_wrong_value[] = {HDR("cookie", "session=abc; veer-pool=greenish")};
    const veer_header_t cookie_wrong_name[] = {HDR("cookie", "xveer-pool=green; veer-pool2=green")};
    const veer_header_t cookie_as_header[] = {HDR("veer-pool", "green")};
    const veer_header_t header_in_cookie[] = {HDR("cookie", "x-canary=always")};
    const veer_header_t both[] = {HDR("cookie", "veer-pool=green"), HDR("x-canary", "always")};

    PICKS_ALL(hdr_always, CANARY);
    PICKS_ALL(hdr_repeated, CANARY);
    PICKS_ALL(hdr_never, BLUE);
    PICKS_ALL(hdr_prefix, BLUE);
    PICKS_ALL(cookie_mid, GREEN);
    PICKS_ALL(cookie_split, GREEN);
    PICKS_ALL(cookie_quoted, GREEN);
    PICKS_ALL(cookie_spaces, GREEN);
    PICKS_ALL(cookie_wrong_value, BLUE);
    PICKS_ALL(cookie_wrong_name, BLUE);
    PICKS_ALL(cookie_as_header, BLUE);
    PICKS_ALL(header_in_cookie, BLUE);
    PICKS_ALL(both, CANARY); /* overrides are tried in order */
#undef PICKS_ALL

    /* An override holds even when every weight is 0; without one, -1. */
    veer_route_input_t in = request("GET", "/", "h", hdr_always, 1);
    CHECK(veer_router_pick(&route, all_zero, 2, &in, 42) == CANARY);
    in = request("GET", "/", "h", cookie_mid, 1);
    CHECK(veer_router_pick(&route, all_zero, 2, &in, 42) == GREEN);
    in = request("GET", "/", "h", hdr_never, 1);
    CHECK(veer_router_pick(&route, all_zero, 2, &in, 42) == -1);
}

/* ---- veer_router_pick: sticky --------------------------------------------- */

/* The cluster the cumulative walk gives a bucket, computed independently. */
static int expected_for_bucket(uint32_t bucket, const veer_split_t *split, size_t n)
{
    uint64_t total = 0, cumulative = 0;
    for (size_t i = 0; i < n; i++)
        total += split[i].weight;
    uint64_t point = (uint64_t)bucket * total / VEER_STICKY_BUCKETS;
    for (size_t i = 0; i < n; i++) {
        cumulative += split[i].weight;
        if (point < cumulative)
            return split[i].cluster;
    }
    return -1;
}

/* Same cluster for every one of 1000 random values. */
static bool pick_is_stable(const veer_route_config_t *route, const veer_split_t *split, size_t n,
                           const veer_route_input_t *in, int *cluster)
{
    int first = veer_router_pick(route, split, n, in, rng_next());
    for (int i = 0; i < 999; i++) {
        if (veer_router_pick(route, split, n, in, rng_next()) != first)
            return false;
    }
    *cluster = first;
    return true;
}

static void test_sticky_header(void)
{
    veer_route_config_t route = {
        .name = "r", .sticky = {.enabled = true, .kind = VEER_KEY_HEADER, .name = "x-user-id", .name_len = 9}};
    veer_split_t split[] = {{BLUE, 50}, {CANARY, 50}};
    int stable_keys = 0, agrees = 0, on_canary = 0, cluster = -1;
    const int keys = 200;
    char key[32];

    for (int k = 0; k < keys; k++) {
        snprintf(key, sizeof(key), "user-%d", k);
        const veer_header_t h[] = {{VEER_IOV_LIT("x-user-id"), iov_str(key)}};
        veer_route_input_t in = request("GET", "/", "h", h, 1);
        if (pick_is_stable(&route, split, 2, &in, &cluster)) {
            stable_keys++;
            agrees += cluster == expected_for_bucket(veer_router_sticky_bucket(key, strlen(key)), split, 2);
            on_canary += cluster == CANARY;
        }
    }
    CHECK(stable_keys == keys);
    CHECK(agrees == keys);
    CHECK(on_canary > keys / 4 && on_canary < keys * 3 / 4); /* both sides used */

    /* The first occurrence is the key, trimmed. */
    const veer_header_t repeated[] = {HDR("x-user-id", " user-7 "), HDR("x-user-id", "user-8")};
    veer_route_input_t in = request("GET", "/", "h", repeated, 2);
    CHECK(pick_is_stable(&route, split, 2, &in, &cluster) &&
          cluster == expected_for_bucket(veer_router_sticky_bucket("user-7", 6), split, 2));

    /* Key absent, or empty: weighted random per request. */
    const veer_header_t other[] = {HDR("x-session", "user-1")};
    const veer_header_t empty[] = {HDR("x-user-id", "")};
    int counts[N_CLUSTERS + 1];
    in = request("GET", "/", "h", other, 1);
    pick_counts(&route, split, 2, &in, 20000, counts);
    CHECK(share_near(counts[CANARY], 20000, 0.5, 0.02));
    in = request("GET", "/", "h", empty, 1);
    pick_counts(&route, split, 2, &in, 20000, counts);
    CHECK(share_near(counts[CANARY], 20000, 0.5, 0.02));
    in = request("GET", "/", "h", NULL, 0);
    pick_counts(&route, split, 2, &in, 20000, counts);
    CHECK(share_near(counts[CANARY], 20000, 0.5, 0.02));

    /* Sticky still yields to an override, and to all-zero weights. */
    veer_override_t force = {.kind = VEER_KEY_HEADER, .name = "x-canary", .name_len = 8,
                             .equals = "always", .equals_len = 6, .cluster = GREEN};
    route.overrides = &force;
    route.override_count = 1;
    const veer_header_t forced[] = {HDR("x-user-id", "user-1"), HDR("x-canary", "always")};
    in = request("GET", "/", "h", forced, 2);
    CHECK(veer_router_pick(&route, split, 2, &in, 0) == GREEN);
    route.override_count = 0;
    veer_split_t all_zero[] = {{BLUE, 0}, {CANARY, 0}};
    CHECK(veer_router_pick(&route, all_zero, 2, &in, 0) == -1);

    /* A disabled sticky block is ignored even if a name is set. */
    route.sticky.enabled = false;
    in = request("GET", "/", "h", forced, 2);
    pick_counts(&route, split, 2, &in, 20000, counts);
    CHECK(share_near(counts[CANARY], 20000, 0.5, 0.02));
}

static void test_sticky_cookie(void)
{
    veer_route_config_t route = {
        .name = "r", .sticky = {.enabled = true, .kind = VEER_KEY_COOKIE, .name = "uid", .name_len = 3}};
    veer_split_t split[] = {{BLUE, 70}, {GREEN, 20}, {CANARY, 10}};
    int cluster = -1, stable_keys = 0, agrees = 0;
    const int keys = 200;
    char key[32], cookie[96];

    for (int k = 0; k < keys; k++) {
        snprintf(key, sizeof(key), "%08x", (unsigned)k * 2654435761u);
        snprintf(cookie, sizeof(cookie), "session=s%d; uid=%s; theme=dark", k, key);
        const veer_header_t h[] = {{VEER_IOV_LIT("cookie"), iov_str(cookie)}};
        veer_route_input_t in = request("GET", "/", "h", h, 1);
        if (pick_is_stable(&route, split, 3, &in, &cluster)) {
            stable_keys++;
            agrees += cluster == expected_for_bucket(veer_router_sticky_bucket(key, strlen(key)), split, 3);
        }
    }
    CHECK(stable_keys == keys);
    CHECK(agrees == keys);

    /* Quoted cookie values hash like the bare value. */
    const veer_header_t bare[] = {HDR("cookie", "uid=abc123")};
    const veer_header_t quoted[] = {HDR("cookie", "x=1"), HDR("cookie", "uid=\"abc123\"")};
    veer_route_input_t a = request("GET", "/", "h", bare, 1), b = request("GET", "/", "h", quoted, 2);
    int ca = -1, cb = -2;
    CHECK(pick_is_stable(&route, split, 3, &a, &ca) && pick_is_stable(&route, split, 3, &b, &cb) && ca == cb);

    /* No such cookie: random. */
    const veer_header_t other[] = {HDR("cookie", "uidx=abc; session=1"), HDR("uid", "abc")};
    veer_route_input_t in = request("GET", "/", "h", other, 2);
    int counts[N_CLUSTERS + 1];
    pick_counts(&route, split, 3, &in, 20000, counts);
    CHECK(share_near(counts[BLUE], 20000, 0.7, 0.02) && share_near(counts[CANARY], 20000, 0.1, 0.02));
}

static void test_sticky_client_address(void)
{
    veer_route_config_t route = {.name = "r", .sticky = {.enabled = true, .kind = VEER_KEY_CLIENT_ADDR}};
    veer_split_t split[] = {{BLUE, 50}, {GREEN, 25}, {CANARY, 25}};
    veer_route_input_t in = request("GET", "/", "h", NULL, 0);
    int c1 = -1, c2 = -2, stable_keys = 0, agrees = 0;

    /* IPv4: the port does not matter, the address alone is the key. */
    for (unsigned i = 0; i < 100; i++) {
        struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)(1024 + i))};
        sin.sin_addr.s_addr = htonl(0x0a000000u + i * 7919u);
        in.client_addr = (const struct sockaddr *)&sin;
        if (!pick_is_stable(&route, split, 3, &in, &c1))
            continue;
        sin.sin_port = htons(60000);
        if (pick_is_stable(&route, split, 3, &in, &c2) && c1 == c2)
            stable_keys++;
        agrees += c1 == expected_for_bucket(veer_router_sticky_bucket((const char *)&sin.sin_addr, 4), split, 3);
    }
    CHECK(stable_keys == 100);
    CHECK(agrees == 100);

    /* IPv6: sixteen address bytes, port and flow info ignored. */
    stable_keys = agrees = 0;
    for (unsigned i = 0; i < 100; i++) {
        struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6, .sin6_port = htons(443)};
        inet_pton(AF_INET6, "2001:db8::", &sin6.sin6_addr);
        sin6.sin6_addr.s6_addr[14] = (uint8_t)(i >> 8);
        sin6.sin6_addr.s6_addr[15] = (uint8_t)i;
        in.client_addr = (const struct sockaddr *)&sin6;
        if (!pick_is_stable(&route, split, 3, &in, &c1))
            continue;
        sin6.sin6_port = htons(55555);
        sin6.sin6_flowinfo = htonl(7);
        if (pick_is_stable(&route, split, 3, &in, &c2) && c1 == c2)
            stable_keys++;
        agrees +=
            c1 == expected_for_bucket(veer_router_sticky_bucket((const char *)&sin6.sin6_addr, 16), split, 3);
    }
    CHECK(stable_keys == 100);
    CHECK(agrees == 100);

    /* A v4-mapped address (dual-stack listener) hashes as the IPv4 address. */
    int mapped_same = 0;
    for (unsigned i = 0; i < 100; i++) {
        struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(1)};
        sin.sin_addr.s_addr = htonl(0xc0a80000u + i);
        struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6, .sin6_port = htons(2)};
        sin6.sin6_addr.s6_addr[10] = 0xff;
        sin6.sin6_addr.s6_addr[11] = 0xff;
        memcpy(&sin6.sin6_addr.s6_addr[12], &sin.sin_addr, 4);
        in.client_addr = (const struct sockaddr *)&sin;
        bool ok = pick_is_stable(&route, split, 3, &in, &c1);
        in.client_addr = (const struct sockaddr *)&sin6;
        mapped_same += ok && pick_is_stable(&route, split, 3, &in, &c2) && c1 == c2;
    }
    CHECK(mapped_same == 100);

    /* No address, or one without an IP: weighted random. */
    int counts[N_CLUSTERS + 1];
    in.client_addr = NULL;
    pick_counts(&route, split, 3, &in, 20000, counts);
    CHECK(share_near(counts[BLUE], 20000, 0.5, 0.02) && share_near(counts[CANARY], 20000, 0.25, 0.02));
    struct sockaddr_un sun = {.sun_family = AF_UNIX, .sun_path = "/run/veer.sock"};
    in.client_addr = (const struct sockaddr *)&sun;
    pick_counts(&route, split, 3, &in, 20000, counts);
    CHECK(share_near(counts[BLUE], 20000, 0.5, 0.02) && share_near(counts[CANARY], 20000, 0.25, 0.02));
}

/* Every key on the canary (last entry) at weight w stays there at every
 * larger w. split_for(w) builds the split for canary weight w. */
typedef size_t (*split_for_fn)(uint32_t w, veer_split_t *out);

static size_t split_stable_shrinks(uint32_t w, veer_split_t *out)
{
    out[0] = (veer_split_t){BLUE, 100 - w};
    out[1] = (veer_split_t){CANARY, w};
    return 2;
}

static size_t split_stable_fixed(uint32_t w, veer_split_t *out)
{
    out[0] = (veer_split_t){BLUE, 100};
    out[1] = (veer_split_t){CANARY, w};
    return 2;
}

static size_t split_two_stable(uint32_t w, veer_split_t *out)
{
    out[0] = (veer_split_t){BLUE, (100 - w) * 3 / 4};
    out[1] = (veer_split_t){GREEN, (100 - w) - (100 - w) * 3 / 4};
    out[2] = (veer_split_t){CANARY, w};
    return 3;
}

static void check_monotone(split_for_fn split_for, bool share_is_w)
{
    static const uint32_t weights[] = {0, 1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100};
    enum { N_W = sizeof(weights) / sizeof(weights[0]), KEYS = 10000 };
    static int cluster_at[KEYS][N_W];
    veer_route_config_t route = {
        .name = "r", .sticky = {.enabled = true, .kind = VEER_KEY_HEADER, .name = "x-user-id", .name_len = 9}};
    char key[32];

    for (int k = 0; k < KEYS; k++) {
        snprintf(key, sizeof(key), "tenant-%d", k);
        const veer_header_t h[] = {{VEER_IOV_LIT("x-user-id"), iov_str(key)}};
        veer_route_input_t in = request("POST", "/api/v1/embed", "h", h, 1);
        for (int i = 0; i < N_W; i++) {
            veer_split_t split[3];
            size_t n = split_for(weights[i], split);
            cluster_at[k][i] = veer_router_pick(&route, split, n, &in, rng_next());
        }
    }
    int violations = 0, share_off = 0;
    for (int i = 0; i < N_W; i++) {
        int on_canary = 0;
        for (int k = 0; k < KEYS; k++) {
            on_canary += cluster_at[k][i] == CANARY;
            if (cluster_at[k][i] != CANARY)
                continue;
            for (int j = i + 1; j < N_W; j++)
                violations += cluster_at[k][j] != CANARY;
        }
        if (share_is_w && !share_near(on_canary, KEYS, weights[i] / 100.0, 0.015))
            share_off++;
    }
    CHECK(violations == 0);
    CHECK(share_off == 0);
    /* The ends are exact: nobody on the canary at 0, everybody at 100%. */
    int at_zero = 0, at_full = 0;
    for (int k = 0; k < KEYS; k++) {
        at_zero += cluster_at[k][0] == CANARY;
        at_full += cluster_at[k][N_W - 1] == CANARY;
    }
    CHECK(at_zero == 0);
    if (share_is_w)
        CHECK(at_full == KEYS);
}

static void test_sticky_monotone(void)
{
    check_monotone(split_stable_shrinks, true);
    check_monotone(split_two_stable, true);
    check_monotone(split_stable_fixed, false); /* share is w / (100 + w) */
}

/* ---- veer_router_sticky_bucket -------------------------------------------- */

/* 100k distinct keys into the buckets. One decile's count is binomial with
 * sd sqrt(100000 * 0.1 * 0.9) = 95, so a perfect hash strays ~1.6 sd from
 * 10000 +-150 (1.5% relative) in most runs of ten deciles: that bound would
 * test luck, not the hash. What is checked: each decile's share within 1.5
 * percentage points of 10%, within 4 sd (+-380 keys), the decile chi-square
 * under 27.88 (9 dof, p = 0.001), and the chi-square over all 10000 buckets
 * (9999 dof: mean 9999, sd 141) under five sd. */
typedef size_t (*key_gen_fn)(uint32_t i, char *buf, size_t size);

static size_t key_user(uint32_t i, char *buf, size_t size)
{
    return (size_t)snprintf(buf, size, "user-%u", (unsigned)i);
}

static size_t key_ipv4(uint32_t i, char *buf, size_t size)
{
    uint32_t addr = htonl(0x0a000000u + i); /* 10.0.0.0 upward, as the client-address key */
    memcpy(buf, &addr, sizeof(addr));
    return sizeof(addr);
}

static void check_spread(key_gen_fn key_gen)
{
    enum { KEYS = 100000 };
    static int per_bucket[VEER_STICKY_BUCKETS];
    int deciles[10] = {0}, out_of_range = 0;
    char key[32];

    memset(per_bucket, 0, sizeof(per_bucket));
    for (uint32_t i = 0; i < KEYS; i++) {
        uint32_t b = veer_router_sticky_bucket(key, key_gen(i, key, sizeof(key)));
        if (b >= VEER_STICKY_BUCKETS) {
            out_of_range++;
            continue;
        }
        per_bucket[b]++;
        deciles[b / (VEER_STICKY_BUCKETS / 10)]++;
    }
    CHECK(out_of_range == 0);

    const double per_decile = KEYS / 10.0;
    int off_share = 0, off_sd = 0;
    double decile_chi2 = 0;
    for (int d = 0; d < 10; d++) {
        off_share += fabs(deciles[d] / (double)KEYS - 0.10) > 0.015;
        off_sd += fabs(deciles[d] - per_decile) > 4 * sqrt(KEYS * 0.1 * 0.9);
        decile_chi2 += (deciles[d] - per_decile) * (deciles[d] - per_decile) / per_decile;
    }
    CHECK(off_share == 0);
    CHECK(off_sd == 0);
    CHECK(decile_chi2 < 27.88);

    double expected = (double)KEYS / VEER_STICKY_BUCKETS, chi2 = 0;
    for (unsigned b = 0; b < VEER_STICKY_BUCKETS; b++)
        chi2 += (per_bucket[b] - expected) * (per_bucket[b] - expected) / expected;
    CHECK(chi2 < 9999 + 5 * 141.4);
}

static void test_bucket_spread(void)
{
    check_spread(key_user);
    check_spread(key_ipv4);

    /* Pinned values, computed apart (in Python): the hash must never change,
     * or every replica and every restart after an upgrade would reshuffle
     * users between pools. */
    CHECK(veer_router_sticky_bucket("", 0) == 4342);
    CHECK(veer_router_sticky_bucket("user-1", 6) == 5477);
    CHECK(veer_router_sticky_bucket("alice@example.com", 17) == 3736);
    CHECK(veer_router_sticky_bucket("user-1", 6) != veer_router_sticky_bucket("user-2", 6));
}

int main(void)
{
    test_match();
    test_header_and_cookie_lookup();
    test_weights();
    test_overrides();
    test_sticky_header();
    test_sticky_cookie();
    test_sticky_client_address();
    test_sticky_monotone();
    test_bucket_spread();
    return check_summary("test_router");
}
