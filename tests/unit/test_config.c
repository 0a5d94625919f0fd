/* test_config.c - unit tests of config.c: the SPEC example and the minimal
 * config parse to the right values and defaults, every validation error
 * names its JSON path, and the duration and address parsers hold their tables.
 * Test JSON is written with single quotes and turned into JSON by q(). */

#include "config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "check.h"

/* Out-of-memory injection: the test binary replaces malloc (glibc supports
 * this; strdup and cJSON go through it too) so that the Nth allocation fails.
 * Not under AddressSanitizer, which owns malloc. */
#if defined(__SANITIZE_ADDRESS__)
#define VEER_TEST_NO_MALLOC_HOOKS 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define VEER_TEST_NO_MALLOC_HOOKS 1
#endif
#endif

#ifndef VEER_TEST_NO_MALLOC_HOOKS
extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t count, size_t size);
extern void *__libc_realloc(void *ptr, size_t size);
extern void __libc_free(void *ptr);

static long alloc_budget = -1; /* allocations that may still succeed; -1: no limit */
static long live_allocs;

static bool may_alloc(void)
{
    if (alloc_budget < 0)
        return true;
    if (alloc_budget == 0)
        return false;
    alloc_budget--;
    return true;
}

void *malloc(size_t size)
{
    void *p = may_alloc() ? __libc_malloc(size) : NULL;
    live_allocs += p != NULL;
    return p;
}

void *calloc(size_t count, size_t size)
{
    void *p = may_alloc() ? __libc_calloc(count, size) : NULL;
    live_allocs += p != NULL;
    return p;
}

void *realloc(void *ptr, size_t size)
{
    if (ptr && size == 0) {
        free(ptr);
        return NULL;
    }
    void *p = may_alloc() ? __libc_realloc(ptr, size) : NULL;
    live_allocs += !ptr && p;
    return p;
}

void free(void *ptr)
{
    live_allocs -= ptr != NULL;
    __libc_free(ptr);
}
#endif

/* 'single' quotes -> "double" quotes, so test JSON stays readable in C. */
static char *q(const char *text)
{
    char *json = strdup(text);
    if (!json) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    for (char *c = json; *c; c++)
        if (*c == '\'')
            *c = '"';
    return json;
}

static veer_config_t *parse_q(const char *text, veer_config_errors_t *errs)
{
    char *json = q(text);
    veer_config_t *cfg = veer_config_parse(json, strlen(json), errs);
    free(json);
    return cfg;
}

static bool has_error(const veer_config_errors_t *errs, const char *needle)
{
    for (size_t i = 0; i < errs->count; i++)
        if (strstr(errs->messages[i], needle))
            return true;
    return false;
}

static void print_errors(const veer_config_errors_t *errs)
{
    for (size_t i = 0; i < errs->count; i++)
        fprintf(stderr, "    error: %s\n", errs->messages[i]);
}

/* The config must be rejected with an error containing each needle (NULL-terminated). */
static void expect_errors_at(int line, const char *text, const char *const *needles)
{
    veer_config_errors_t errs = {0};
    veer_config_t *cfg = parse_q(text, &errs);
    checks++;
    bool ok = cfg == NULL && errs.count > 0;
    for (size_t i = 0; ok && needles[i]; i++)
        ok = has_error(&errs, needles[i]);
    if (!ok) {
        failures++;
        fprintf(stderr, "%s:%d: expected rejection with:", __FILE__, line);
        for (size_t i = 0; needles[i]; i++)
            fprintf(stderr, " [%s]", needles[i]);
        fprintf(stderr, "\n    config: %s\n    got %s\n", text, cfg ? "a config" : "NULL");
        print_errors(&errs);
    }
    veer_config_free(cfg);
    veer_config_errors_clear(&errs);
}

#define EXPECT_ERROR(text, ...) expect_errors_at(__LINE__, (text), (const char *const[]){__VA_ARGS__, NULL})

/* Building blocks of a valid config; each error test changes one part. */
#define LISTENERS "'listeners':[{'address':'127.0.0.1:8080'}]"
#define CLUSTERS "'clusters':{'local':{'endpoints':['127.0.0.1:8081']}}"
#define ROUTES "'routes':[{'name':'r','split':[{'cluster':'local','weight':1}]}]"
#define MINIMAL "{" LISTENERS "," CLUSTERS "," ROUTES "}"
#define WITH_TOP(extra) "{" LISTENERS "," CLUSTERS "," ROUTES "," extra "}"
#define WITH_LISTENER(extra) "{'listeners':[{'address':'127.0.0.1:8080'," extra "}]," CLUSTERS "," ROUTES "}"
#define WITH_CLUSTER(extra) "{" LISTENERS ",'clusters':{'local':{'endpoints':['127.0.0.1:8081']," extra "}}," ROUTES "}"
#define WITH_ROUTE(extra) "{" LISTENERS "," CLUSTERS ",'routes':[{'name':'r','split':[{'cluster':'local','weight':1}]," extra "}]}"
#define THREE_CLUSTERS "'clusters':{'blue':{'endpoints':['10.0.0.1:80']},'green':{'endpoints':['10.0.0.2:80']},'canary':{'endpoints':['10.0.0.3:80']}}"
#define WITH_SPLIT(split) "{" LISTENERS "," THREE_CLUSTERS ",'routes':[{'name':'r','split':" split "}]}"
#define WITH_ROUTE3(extra) "{" LISTENERS "," THREE_CLUSTERS ",'routes':[{'name':'r','split':[{'cluster':'blue','weight':1}]," extra "}]}"

/* The example of SPEC.md "Config file (JSON)", verbatim. */
static const char spec_example[] =
    "{\n"
    "  \"workers\": 0,\n"
    "  \"listeners\": [\n"
    "    {\"name\": \"http\", \"address\": \"0.0.0.0:8080\"},\n"
    "    {\"name\": \"https\", \"address\": \"0.0.0.0:8443\",\n"
    "     \"tls\": {\"cert\": \"/etc/veer/tls.crt\", \"key\": \"/etc/veer/tls.key\",\n"
    "             \"alpn\": [\"h2\", \"http/1.1\"], \"client_ca\": null}}\n"
    "  ],\n"
    "  \"admin\": {\"address\": \"127.0.0.1:9901\", \"token_file\": null},\n"
    "  \"state_file\": \"/var/lib/veer/state.json\",\n"
    "  \"access_log\": {\"path\": \"-\", \"format\": \"json\"},\n"
    "  \"limits\": {\"max_header_bytes\": 65536, \"max_body_bytes\": 16777216,\n"
    "             \"idle_timeout\": \"60s\", \"drain_timeout\": \"30s\"},\n"
    "  \"clusters\": {\n"
    "    \"blue\": {\n"
    "      \"endpoints\": [\"embed-blue.akidb.svc.cluster.local:8080\"],\n"
    "      \"dns_refresh\": \"5s\",\n"
    "      \"protocol\": \"http1\",\n"
    "      \"lb\": \"least_request\",\n"
    "      \"connect_timeout\": \"1s\",\n"
    "      \"tls\": null,\n"
    "      \"health_check\": {\"path\": \"/health\", \"interval\": \"5s\", \"timeout\": \"1s\",\n"
    "                       \"healthy_threshold\": 2, \"unhealthy_threshold\": 3},\n"
    "      \"outlier_detection\": {\"consecutive_5xx\": 5, \"consecutive_gateway_failure\": 5,\n"
    "                            \"interval\": \"10s\", \"base_ejection_time\": \"30s\",\n"
    "                            \"max_ejection_time\": \"300s\", \"max_ejection_percent\": 50,\n"
    "                            \"success_rate_minimum_hosts\": 3,\n"
    "                            \"success_rate_request_volume\": 100,\n"
    "                            \"success_rate_stdev_factor\": 1.9},\n"
    "      \"circuit_breakers\": {\"max_connections\": 1024, \"max_pending_requests\": 1024,\n"
    "                           \"max_requests\": 1024, \"max_retries\": 3}\n"
    "    },\n"
    "    \"green\":  {\"endpoints\": [\"embed-green.akidb.svc.cluster.local:8080\"]},\n"
    "    \"canary\": {\"endpoints\": [\"embed-canary.akidb.svc.cluster.local:8080\"]}\n"
    "  },\n"
    "  \"routes\": [\n"
    "    {\"name\": \"embed\",\n"
    "     \"match\": {\"host\": null, \"path_prefix\": \"/api/v1/embed\", \"method\": null,\n"
    "               \"headers\": [{\"name\": \"content-type\", \"prefix\": \"application/json\"}]},\n"
    "     \"split\": [{\"cluster\": \"blue\", \"weight\": 90}, {\"cluster\": \"canary\", \"weight\": 10}],\n"
    "     \"overrides\": [{\"header\": \"x-canary\", \"equals\": \"always\", \"cluster\": \"canary\"},\n"
    "                   {\"cookie\": \"veer-pool\", \"equals\": \"green\", \"cluster\": \"green\"}],\n"
    "     \"sticky\": {\"header\": \"x-user-id\"},\n"
    "     \"timeout\": \"10s\",\n"
    "     \"retry\": {\"attempts\": 2, \"on\": [\"connect-failure\", \"reset\", \"503\"],\n"
    "               \"per_try_timeout\": \"2s\", \"budget_percent\": 20},\n"
    "     \"canary\": {\"stable\": \"blue\", \"canary\": \"canary\", \"mode\": \"progressive\",\n"
    "                \"interval\": \"30s\", \"step_weight\": 10, \"max_weight\": 50,\n"
    "                \"threshold\": 5, \"min_requests\": 100,\n"
    "                \"success_rate_min\": 99.0, \"p99_max\": \"500ms\",\n"
    "                \"compare_to_stable\": true,\n"
    "                \"webhooks\": {\"promoted\": null, \"rolled_back\": null}}},\n"
    "    {\"name\": \"grpc\", \"match\": {\"path_prefix\": \"/akidb.v1.Embed/\"},\n"
    "     \"split\": [{\"cluster\": \"blue\", \"weight\": 100}]}\n"
    "  ]\n"
    "}\n";

static void test_spec_example(void)
{
    veer_config_errors_t errs = {0};
    veer_config_t *cfg = veer_config_parse(spec_example, strlen(spec_example), &errs);
    print_errors(&errs);
    CHECK(cfg != NULL);
    CHECK(errs.count == 0);
    if (!cfg)
        return;
    CHECK(cfg->workers >= 1);
    CHECK(cfg->path == NULL);
    CHECK(cfg->json != NULL && cJSON_GetObjectItemCaseSensitive(cfg->json, "routes") != NULL);

    CHECK(cfg->listener_count == 2);
    CHECK_STR(cfg->listeners[0].name, "http");
    CHECK_STR(cfg->listeners[0].address, "0.0.0.0:8080");
    CHECK(cfg->listeners[0].tls == NULL);
    CHECK(cfg->listeners[0].addr.ss_family == AF_INET);
    CHECK(ntohs(((struct sockaddr_in *)&cfg->listeners[0].addr)->sin_port) == 8080);
    CHECK(cfg->listeners[0].addrlen == sizeof(struct sockaddr_in));
    CHECK_STR(cfg->listeners[1].name, "https");
    CHECK(cfg->listeners[1].tls != NULL);
    CHECK_STR(cfg->listeners[1].tls->cert, "/etc/veer/tls.crt");
    CHECK_STR(cfg->listeners[1].tls->key, "/etc/veer/tls.key");
    CHECK(cfg->listeners[1].tls->alpn_count == 2);
    CHECK_STR(cfg->listeners[1].tls->alpn[0], "h2");
    CHECK_STR(cfg->listeners[1].tls->alpn[1], "http/1.1");
    CHECK(cfg->listeners[1].tls->client_ca == NULL);

    CHECK_STR(cfg->admin.address, "127.0.0.1:9901");
    CHECK(cfg->admin.addr.ss_family == AF_INET);
    CHECK(cfg->admin.token_file == NULL);
    CHECK(!cfg->admin.protect_reads);
    CHECK_STR(cfg->state_file, "/var/lib/veer/state.json");
    CHECK_STR(cfg->access_log.path, "-");
    CHECK(cfg->access_log.format == VEER_ACCESS_LOG_JSON);

    CHECK(cfg->limits.max_header_bytes == 65536);
    CHECK(cfg->limits.max_body_bytes == 16777216);
    CHECK(cfg->limits.idle_timeout_ms == 60000);
    CHECK(cfg->limits.drain_timeout_ms == 30000);
    CHECK(cfg->limits.header_timeout_ms == 10000);
    CHECK(cfg->limits.max_connections == 10000);

    CHECK(cfg->cluster_count == 3);
    CHECK(veer_config_cluster_index(cfg, "blue") == 0);
    CHECK(veer_config_cluster_index(cfg, "green") == 1);
    CHECK(veer_config_cluster_index(cfg, "canary") == 2);
    CHECK(veer_config_cluster_index(cfg, "gren") == -1);
    const veer_cluster_config_t *blue = &cfg->clusters[0];
    CHECK(blue->endpoint_count == 1);
    CHECK_STR(blue->endpoints[0].host, "embed-blue.akidb.svc.cluster.local");
    CHECK(blue->endpoints[0].port == 8080);
    CHECK(!blue->endpoints[0].is_literal);
    CHECK(blue->dns_refresh_ms == 5000);
    CHECK(blue->protocol == VEER_PROTO_HTTP1);
    CHECK(blue->lb == VEER_LB_LEAST_REQUEST);
    CHECK(blue->connect_timeout_ms == 1000);
    CHECK(blue->tls == NULL);
    CHECK(blue->health_check != NULL);
    if (blue->health_check) {
        CHECK_STR(blue->health_check->path, "/health");
        CHECK(blue->health_check->interval_ms == 5000);
        CHECK(blue->health_check->timeout_ms == 1000);
        CHECK(blue->health_check->healthy_threshold == 2);
        CHECK(blue->health_check->unhealthy_threshold == 3);
    }
    CHECK(blue->outlier_detection != NULL);
    if (blue->outlier_detection) {
        CHECK(blue->outlier_detection->consecutive_5xx == 5);
        CHECK(blue->outlier_detection->consecutive_gateway_failure == 5);
        CHECK(blue->outlier_detection->interval_ms == 10000);
        CHECK(blue->outlier_detection->base_ejection_time_ms == 30000);
        CHECK(blue->outlier_detection->max_ejection_time_ms == 300000);
        CHECK(blue->outlier_detection->max_ejection_percent == 50);
        CHECK(blue->outlier_detection->success_rate_minimum_hosts == 3);
        CHECK(blue->outlier_detection->success_rate_request_volume == 100);
        CHECK(blue->outlier_detection->success_rate_stdev_factor == 1.9);
    }
    CHECK(blue->circuit_breakers.max_connections == 1024);
    CHECK(blue->circuit_breakers.max_retries == 3);
    const veer_cluster_config_t *green = &cfg->clusters[1];
    CHECK_STR(green->name, "green");
    CHECK_STR(green->endpoints[0].host, "embed-green.akidb.svc.cluster.local");
    CHECK(green->health_check == NULL);
    CHECK(green->outlier_detection == NULL);
    CHECK(green->tls == NULL);
    CHECK(green->dns_refresh_ms == 5000);
    CHECK(green->connect_timeout_ms == 1000);
    CHECK(green->circuit_breakers.max_connections == 1024);
    CHECK(green->circuit_breakers.max_pending_requests == 1024);
    CHECK(green->circuit_breakers.max_requests == 1024);
    CHECK(green->circuit_breakers.max_retries == 3);

    CHECK(cfg->route_count == 2);
    CHECK(veer_config_route_index(cfg, "embed") == 0);
    CHECK(veer_config_route_index(cfg, "grpc") == 1);
    CHECK(veer_config_route_index(cfg, "nope") == -1);
    const veer_route_config_t *embed = &cfg->routes[0];
    CHECK(embed->match.host == NULL);
    CHECK(embed->match.method == NULL);
    CHECK(embed->match.path_exact == NULL);
    CHECK_STR(embed->match.path_prefix, "/api/v1/embed");
    CHECK(embed->match.header_count == 1);
    CHECK_STR(embed->match.headers[0].name, "content-type");
    CHECK(embed->match.headers[0].name_len == 12);
    CHECK(embed->match.headers[0].kind == VEER_HDR_MATCH_PREFIX);
    CHECK_STR(embed->match.headers[0].value, "application/json");
    CHECK(embed->match.headers[0].value_len == 16);
    CHECK(embed->split_count == 2);
    CHECK(embed->split[0].cluster == 0 && embed->split[0].weight == 90);
    CHECK(embed->split[1].cluster == 2 && embed->split[1].weight == 10);
    CHECK(embed->override_count == 2);
    CHECK(embed->overrides[0].kind == VEER_KEY_HEADER);
    CHECK_STR(embed->overrides[0].name, "x-canary");
    CHECK(embed->overrides[0].name_len == 8);
    CHECK_STR(embed->overrides[0].equals, "always");
    CHECK(embed->overrides[0].equals_len == 6);
    CHECK(embed->overrides[0].cluster == 2);
    CHECK(embed->overrides[1].kind == VEER_KEY_COOKIE);
    CHECK_STR(embed->overrides[1].name, "veer-pool");
    CHECK_STR(embed->overrides[1].equals, "green");
    CHECK(embed->overrides[1].cluster == 1);
    CHECK(embed->sticky.enabled);
    CHECK(embed->sticky.kind == VEER_KEY_HEADER);
    CHECK_STR(embed->sticky.name, "x-user-id");
    CHECK(embed->sticky.name_len == 9);
    CHECK(embed->timeout_ms == 10000);
    CHECK(embed->retry.attempts == 2);
    CHECK(embed->retry.on == (VEER_RETRY_ON_CONNECT_FAILURE | VEER_RETRY_ON_RESET | VEER_RETRY_ON_503));
    CHECK(embed->retry.per_try_timeout_ms == 2000);
    CHECK(embed->retry.budget_percent == 20);
    CHECK(embed->canary != NULL);
    if (embed->canary) {
        CHECK(embed->canary->stable == 0);
        CHECK(embed->canary->canary == 2);
        CHECK(embed->canary->mode == VEER_CANARY_PROGRESSIVE);
        CHECK(embed->canary->interval_ms == 30000);
        CHECK(embed->canary->step_weight == 10);
        CHECK(embed->canary->max_weight == 50);
        CHECK(embed->canary->threshold == 5);
        CHECK(embed->canary->min_requests == 100);
        CHECK(embed->canary->success_rate_min == 99.0);
        CHECK(embed->canary->p99_max_ms == 500);
        CHECK(embed->canary->compare_to_stable);
        CHECK(embed->canary->webhook_promoted == NULL);
        CHECK(embed->canary->webhook_rolled_back == NULL);
    }
    const veer_route_config_t *grpc = &cfg->routes[1];
    CHECK_STR(grpc->match.path_prefix, "/akidb.v1.Embed/");
    CHECK(grpc->match.header_count == 0);
    CHECK(grpc->split_count == 1 && grpc->split[0].cluster == 0 && grpc->split[0].weight == 100);
    CHECK(grpc->override_count == 0);
    CHECK(!grpc->sticky.enabled);
    CHECK(grpc->timeout_ms == 15000);
    CHECK(grpc->retry.attempts == 1);
    CHECK(grpc->canary == NULL);
    veer_config_free(cfg);
    veer_config_errors_clear(&errs);
}

static void test_minimal_defaults(void)
{
    veer_config_errors_t errs = {0};
    veer_config_t *cfg = parse_q(MINIMAL, &errs);
    print_errors(&errs);
    CHECK(cfg != NULL);
    if (!cfg)
        return;
    CHECK(cfg->workers >= 1);
    CHECK(cfg->listener_count == 1);
    CHECK_STR(cfg->listeners[0].name, "http");
    CHECK(cfg->listeners[0].tls == NULL);
    CHECK_STR(cfg->admin.address, "127.0.0.1:9901");
    CHECK(cfg->admin.addr.ss_family == AF_INET);
    CHECK(ntohs(((struct sockaddr_in *)&cfg->admin.addr)->sin_port) == 9901);
    CHECK(cfg->admin.token_file == NULL);
    CHECK(!cfg->admin.protect_reads);
    CHECK(cfg->state_file == NULL);
    CHECK(cfg->access_log.path == NULL);
    CHECK(cfg->access_log.format == VEER_ACCESS_LOG_JSON);
    const veer_limits_config_t *lim = &cfg->limits;
    CHECK(lim->max_header_bytes == 65536);
    CHECK(lim->max_body_bytes == 16777216);
    CHECK(lim->idle_timeout_ms == 60000);
    CHECK(lim->drain_timeout_ms == 30000);
    CHECK(lim->header_timeout_ms == 10000);
    CHECK(lim->max_connections == 10000);
    CHECK(lim->buffer_bytes == 65536);
    CHECK(lim->max_idle_upstream == 1024);
    CHECK(lim->max_pipelined == 16);

    CHECK(cfg->cluster_count == 1);
    const veer_cluster_config_t *c = &cfg->clusters[0];
    CHECK_STR(c->name, "local");
    CHECK(c->endpoint_count == 1);
    CHECK_STR(c->endpoints[0].host, "127.0.0.1");
    CHECK(c->endpoints[0].port == 8081);
    CHECK(c->endpoints[0].is_literal);
    CHECK(c->dns_refresh_ms == 5000);
    CHECK(c->protocol == VEER_PROTO_HTTP1);
    CHECK(c->lb == VEER_LB_LEAST_REQUEST);
    CHECK(c->connect_timeout_ms == 1000);
    CHECK(c->tls == NULL);
    CHECK(c->health_check == NULL);
    CHECK(c->outlier_detection == NULL);
    CHECK(c->circuit_breakers.max_connections == 1024);
    CHECK(c->circuit_breakers.max_pending_requests == 1024);
    CHECK(c->circuit_breakers.max_requests == 1024);
    CHECK(c->circuit_breakers.max_retries == 3);

    CHECK(cfg->route_count == 1);
    const veer_route_config_t *r = &cfg->routes[0];
    CHECK_STR(r->name, "r");
    CHECK(r->match.host == NULL && r->match.path_prefix == NULL && r->match.path_exact == NULL);
    CHECK(r->match.method == NULL && r->match.header_count == 0 && r->match.headers == NULL);
    CHECK(r->split_count == 1 && r->split[0].cluster == 0 && r->split[0].weight == 1);
    CHECK(r->override_count == 0);
    CHECK(!r->sticky.enabled);
    CHECK(r->timeout_ms == 15000);
    CHECK(r->retry.attempts == 1);
    CHECK(r->retry.on == (VEER_RETRY_ON_CONNECT_FAILURE | VEER_RETRY_ON_REFUSED_STREAM));
    CHECK(r->retry.per_try_timeout_ms == 0);
    CHECK(r->retry.budget_percent == 20);
    CHECK(r->canary == NULL);
    veer_config_free(cfg);
    veer_config_errors_clear(&errs);
}

/* Defaults of the optional blocks when they are given but empty-ish. */
/* grpc_service: "" checks the whole server, a name one service; no path needed. */
static void test_grpc_health_check(void)
{
    veer_config_errors_t errs = {0};
    veer_config_t *cfg = parse_q("{" LISTENERS ",'clusters':{'g':{'endpoints':['127.0.0.1:50051'],'protocol':'h2c',"
                                 "'health_check':{'grpc_service':''}},"
                                 "'n':{'endpoints':['127.0.0.1:50052'],'protocol':'h2c',"
                                 "'health_check':{'grpc_service':'akidb.v1.Embed','path':'/ignored'}},"
                                 "'p':{'endpoints':['127.0.0.1:50053'],'protocol':'h2c',"
                                 "'health_check':{'path':'/health','grpc_service':null}}},"
                                 "'routes':[{'name':'r','split':[{'cluster':'g','weight':1}]}]}",
                                 &errs);
    CHECK(cfg != NULL);
    if (cfg == NULL) {
        print_errors(&errs);
        veer_config_errors_clear(&errs);
        return;
    }
    const veer_health_check_config_t *g = cfg->clusters[0].health_check, *n = cfg->clusters[1].health_check,
                                     *p = cfg->clusters[2].health_check;
    CHECK(g != NULL && g->grpc_service != NULL && g->grpc_service[0] == '\0' && g->path == NULL);
    CHECK(g != NULL && g->expected_status_count == 1 && g->expected_statuses[0].lo == 200);
    CHECK(n != NULL && n->grpc_service != NULL && strcmp(n->grpc_service, "akidb.v1.Embed") == 0);
    CHECK(p != NULL && p->grpc_service == NULL && p->path != NULL && strcmp(p->path, "/health") == 0);
    veer_config_free(cfg);
}

static void test_block_defaults(void)
{
    veer_config_errors_t errs = {0};
    veer_config_t *cfg = parse_q("{'workers':3,'listeners':[{'address':'[::1]:8080'},{'address':'127.0.0.1:8443',"
                                 "'tls':{'cert':'c.pem','key':'k.pem'}}],"
                                 "'clusters':{'a':{'endpoints':['[fd00::5]:8080','a.example:80'],'protocol':'h2',"
                                 "'health_check':{'path':'/healthz'},'outlier_detection':{},"
                                 "'circuit_breakers':{'max_retries':0}},"
                                 "'b':{'endpoints':['10.0.0.1:80'],'protocol':'h2c','lb':'round_robin',"
                                 "'tls':{'cert':'c','key':'k','insecure_skip_verify':true,'sni':'b.example'}}},"
                                 "'routes':[{'name':'r','split':[{'cluster':'a','weight':0},{'cluster':'b','weight':5}],"
                                 "'match':{'host':'API.Example.com','path':'/x','method':'post',"
                                 "'headers':[{'name':'X-Env','exact':'prod'},{'name':'x-id','present':true}]},"
                                 "'sticky':{'cookie':'Session'},'timeout':'0s',"
                                 "'retry':{'on':[],'attempts':10,'budget_percent':0},"
                                 "'canary':{'stable':'a','canary':'b','mode':'blue_green',"
                                 "'webhooks':{'promoted':'http://cd/promoted','rolled_back':null}}},"
                                 "{'name':'s','split':[{'cluster':'a','weight':1}],'sticky':{'client_address':true},"
                                 "'match':{'path_prefix':'/'},'retry':{'on':['5xx','gateway-error','timeout',"
                                 "'refused-stream','reset','connect-failure','503']}}]}",
                                 &errs);
    print_errors(&errs);
    CHECK(cfg != NULL);
    if (!cfg)
        return;
    CHECK(cfg->workers == 3);
    CHECK_STR(cfg->listeners[0].name, "http");
    CHECK(cfg->listeners[0].addr.ss_family == AF_INET6);
    CHECK(cfg->listeners[0].addrlen == sizeof(struct sockaddr_in6));
    CHECK_STR(cfg->listeners[1].name, "listener1");
    CHECK(cfg->listeners[1].tls && cfg->listeners[1].tls->alpn_count == 2);
    CHECK_STR(cfg->listeners[1].tls->alpn[0], "h2");
    CHECK_STR(cfg->listeners[1].tls->alpn[1], "http/1.1");
    const veer_cluster_config_t *a = &cfg->clusters[0], *b = &cfg->clusters[1];
    CHECK_STR(a->endpoints[0].host, "fd00::5");
    CHECK(a->endpoints[0].is_literal);
    CHECK_STR(a->endpoints[1].host, "a.example");
    CHECK(!a->endpoints[1].is_literal);
    CHECK(a->protocol == VEER_PROTO_H2);
    CHECK(a->tls != NULL); /* h2 implies TLS with defaults */
    if (a->tls)
        CHECK(!a->tls->ca && !a->tls->sni && !a->tls->cert && !a->tls->key && !a->tls->insecure_skip_verify);
    CHECK(a->health_check && a->health_check->interval_ms == 5000 && a->health_check->timeout_ms == 1000);
    CHECK(a->health_check && a->health_check->healthy_threshold == 2 && a->health_check->unhealthy_threshold == 3);
    const veer_outlier_config_t *od = a->outlier_detection;
    CHECK(od != NULL);
    if (od) {
        CHECK(od->consecutive_5xx == 5 && od->consecutive_gateway_failure == 5);
        CHECK(od->interval_ms == 10000 && od->base_ejection_time_ms == 30000 && od->max_ejection_time_ms == 300000);
        CHECK(od->max_ejection_percent == 10);
        CHECK(od->success_rate_minimum_hosts == 5 && od->success_rate_request_volume == 100);
        CHECK(od->success_rate_stdev_factor == 1.9);
    }
    CHECK(a->circuit_breakers.max_retries == 0 && a->circuit_breakers.max_requests == 1024);
    CHECK(b->protocol == VEER_PROTO_H2C && b->lb == VEER_LB_ROUND_ROBIN);
    CHECK(b->tls && b->tls->insecure_skip_verify);
    CHECK(b->tls && b->tls->sni && strcmp(b->tls->sni, "b.example") == 0);
    const veer_route_config_t *r = &cfg->routes[0];
    CHECK_STR(r->match.host, "api.example.com");
    CHECK_STR(r->match.path_exact, "/x");
    CHECK_STR(r->match.method, "POST");
    CHECK(r->match.header_count == 2);
    CHECK_STR(r->match.headers[0].name, "x-env");
    CHECK(r->match.headers[0].kind == VEER_HDR_MATCH_EXACT);
    CHECK_STR(r->match.headers[0].value, "prod");
    CHECK(r->match.headers[1].kind == VEER_HDR_MATCH_PRESENT);
    CHECK(r->match.headers[1].value == NULL);
    CHECK(r->split[0].weight == 0 && r->split[1].weight == 5);
    CHECK(r->sticky.enabled && r->sticky.kind == VEER_KEY_COOKIE);
    CHECK_STR(r->sticky.name, "Session"); /* cookie names are case-sensitive */
    CHECK(r->timeout_ms == 0);
    CHECK(r->retry.on == 0 && r->retry.attempts == 10 && r->retry.budget_percent == 0);
    CHECK(r->canary != NULL);
    if (r->canary) {
        CHECK(r->canary->mode == VEER_CANARY_BLUE_GREEN);
        CHECK(r->canary->stable == 0 && r->canary->canary == 1);
        CHECK(r->canary->interval_ms == 30000 && r->canary->step_weight == 10 && r->canary->max_weight == 50);
        CHECK(r->canary->threshold == 5 && r->canary->min_requests == 100);
        CHECK(r->canary->success_rate_min == 99.0 && r->canary->p99_max_ms == 500);
        CHECK(r->canary->compare_to_stable);
        CHECK_STR(r->canary->webhook_promoted, "http://cd/promoted");
        CHECK(r->canary->webhook_rolled_back == NULL);
    }
    const veer_route_config_t *s = &cfg->routes[1];
    CHECK(s->sticky.enabled && s->sticky.kind == VEER_KEY_CLIENT_ADDR && s->sticky.name == NULL);
    CHECK(s->retry.on == (VEER_RETRY_ON_CONNECT_FAILURE | VEER_RETRY_ON_RESET | VEER_RETRY_ON_REFUSED_STREAM |
                          VEER_RETRY_ON_5XX | VEER_RETRY_ON_GATEWAY_ERROR | VEER_RETRY_ON_503 |
                          VEER_RETRY_ON_TIMEOUT));
    veer_config_free(cfg);
    veer_config_errors_clear(&errs);
}

static void test_unknown_keys(void)
{
    EXPECT_ERROR(WITH_TOP("'workerz':2"), "workerz: unknown key (did you mean \"workers\"?)");
    EXPECT_ERROR(WITH_TOP("'zzz':1"), "zzz: unknown key");
    EXPECT_ERROR(WITH_LISTENER("'adress':'x'"), "listeners[0].adress: unknown key");
    EXPECT_ERROR(WITH_LISTENER("'tls':{'cert':'c','key':'k','alpns':[]}"), "listeners[0].tls.alpns: unknown key");
    EXPECT_ERROR(WITH_TOP("'admin':{'tokenfile':'x'}"), "admin.tokenfile: unknown key");
    EXPECT_ERROR(WITH_TOP("'access_log':{'file':'x'}"), "access_log.file: unknown key");
    EXPECT_ERROR(WITH_TOP("'limits':{'max_headers':1}"), "limits.max_headers: unknown key");
    EXPECT_ERROR(WITH_CLUSTER("'endpoint':[]"), "clusters.local.endpoint: unknown key");
    EXPECT_ERROR(WITH_CLUSTER("'tls':{'verify':false}"), "clusters.local.tls.verify: unknown key");
    EXPECT_ERROR(WITH_CLUSTER("'health_check':{'path':'/h','intervall':'1s'}"),
                 "clusters.local.health_check.intervall: unknown key");
    EXPECT_ERROR(WITH_CLUSTER("'outlier_detection':{'consecutive_500':1}"),
                 "clusters.local.outlier_detection.consecutive_500: unknown key");
    EXPECT_ERROR(WITH_CLUSTER("'circuit_breakers':{'max_conns':1}"),
                 "clusters.local.circuit_breakers.max_conns: unknown key");
    EXPECT_ERROR(WITH_ROUTE("'matchx':{}"), "routes[0].matchx: unknown key (did you mean \"match\"?)");
    EXPECT_ERROR(WITH_ROUTE("'match':{'prefix':'/'}"), "routes[0].match.prefix: unknown key");
    EXPECT_ERROR(WITH_ROUTE("'match':{'headers':[{'name':'a','exact':'b','regex':'c'}]}"),
                 "routes[0].match.headers[0].regex: unknown key");
    EXPECT_ERROR(WITH_ROUTE("'overrides':[{'header':'a','equals':'b','cluster':'local','x':1}]"),
                 "routes[0].overrides[0].x: unknown key");
    EXPECT_ERROR(WITH_ROUTE("'sticky':{'hdr':'a'}"), "routes[0].sticky.hdr: unknown key");
    EXPECT_ERROR(WITH_ROUTE("'retry':{'attempt':2}"), "routes[0].retry.attempt: unknown key");
    EXPECT_ERROR(WITH_ROUTE("'canary':{'stable':'local','canary':'local','steps':1}"),
                 "routes[0].canary.steps: unknown key");
    EXPECT_ERROR(WITH_ROUTE("'canary':{'webhooks':{'promote':null}}"), "routes[0].canary.webhooks.promote: unknown key");
    EXPECT_ERROR("{" LISTENERS "," CLUSTERS ",'routes':[{'name':'r','split':[{'cluster':'local','weight':1,'w':1}]}]}",
                 "routes[0].split[0].w: unknown key");
    EXPECT_ERROR(WITH_TOP("'Workers':1"), "Workers: unknown key"); /* keys are case-sensitive */
    EXPECT_ERROR("{'workers':1," LISTENERS "," CLUSTERS "," ROUTES ",'workers':2}", "workers: duplicate key");
}

static void test_wrong_types(void)
{
    EXPECT_ERROR("[]", "the config must be a JSON object");
    EXPECT_ERROR(WITH_TOP("'workers':'4'"), "workers: expected a non-negative integer, got \"4\"");
    EXPECT_ERROR(WITH_TOP("'workers':1.5"), "workers: expected a non-negative integer, got 1.5");
    EXPECT_ERROR(WITH_TOP("'workers':-1"), "workers: expected a non-negative integer");
    EXPECT_ERROR(WITH_TOP("'workers':5000"), "workers: must be between 0 and 1024, got 5000");
    EXPECT_ERROR("{'listeners':{}," CLUSTERS "," ROUTES "}", "listeners: expected a non-empty array, got an object");
    EXPECT_ERROR("{'listeners':[]," CLUSTERS "," ROUTES "}", "listeners: expected a non-empty array, got an empty array");
    EXPECT_ERROR("{" CLUSTERS "," ROUTES "}", "listeners: required key is missing");
    EXPECT_ERROR("{'listeners':['0.0.0.0:80']," CLUSTERS "," ROUTES "}", "listeners[0]: expected an object");
    EXPECT_ERROR(WITH_LISTENER("'name':7"), "listeners[0].name: expected a string, got 7");
    EXPECT_ERROR(WITH_LISTENER("'name':''"), "listeners[0].name: must not be empty");
    EXPECT_ERROR(WITH_LISTENER("'name':'a b'"), "listeners[0].name: invalid name \"a b\"");
    EXPECT_ERROR(WITH_LISTENER("'tls':true"), "listeners[0].tls: expected an object or null, got true");
    EXPECT_ERROR(WITH_LISTENER("'tls':{'cert':'c'}"), "listeners[0].tls.key: required key is missing");
    EXPECT_ERROR(WITH_LISTENER("'tls':{'cert':'c','key':'k','alpn':'h2'}"), "listeners[0].tls.alpn: expected a non-empty array");
    EXPECT_ERROR(WITH_LISTENER("'tls':{'cert':'c','key':'k','alpn':[]}"), "listeners[0].tls.alpn: expected a non-empty array");
    EXPECT_ERROR(WITH_LISTENER("'tls':{'cert':'c','key':'k','alpn':['h3']}"),
                 "listeners[0].tls.alpn[0]: expected \"h2\" or \"http/1.1\", got \"h3\"");
    EXPECT_ERROR(WITH_LISTENER("'tls':{'cert':'c','key':'k','alpn':['h2','h2']}"),
                 "listeners[0].tls.alpn[1]: duplicate protocol \"h2\"");
    EXPECT_ERROR(WITH_LISTENER("'tls':{'cert':'c','key':'k','client_ca':5}"),
                 "listeners[0].tls.client_ca: expected a string or null, got 5");
    EXPECT_ERROR(WITH_TOP("'admin':null"), "admin: expected an object, got null");
    EXPECT_ERROR(WITH_TOP("'admin':{'protect_reads':'yes'}"), "admin.protect_reads: expected true or false, got \"yes\"");
    EXPECT_ERROR(WITH_TOP("'admin':{'protect_reads':true}"), "admin.protect_reads: requires admin.token_file");
    EXPECT_ERROR(WITH_TOP("'admin':{'token_file':''}"), "admin.token_file: must not be empty");
    EXPECT_ERROR(WITH_TOP("'state_file':false"), "state_file: expected a string or null, got false");
    EXPECT_ERROR(WITH_TOP("'access_log':{'format':'text'}"), "access_log.format: unknown value \"text\" (expected one of: json)");
    EXPECT_ERROR(WITH_TOP("'access_log':{'path':1}"), "access_log.path: expected a string or null");
    EXPECT_ERROR(WITH_TOP("'access_log':{'path':'a\\nb'}"), "access_log.path: must not contain control characters");
    EXPECT_ERROR(WITH_TOP("'limits':{'max_header_bytes':'64k'}"), "limits.max_header_bytes: expected a positive integer, got \"64k\"");
    EXPECT_ERROR(WITH_TOP("'limits':{'max_header_bytes':0}"), "limits.max_header_bytes: expected a positive integer");
    EXPECT_ERROR(WITH_TOP("'limits':{'max_header_bytes':100}"), "limits.max_header_bytes: must be between 1024 and 1048576, got 100");
    EXPECT_ERROR(WITH_TOP("'limits':{'max_header_bytes':2000000}"), "limits.max_header_bytes: must be between 1024 and 1048576");
    EXPECT_ERROR(WITH_TOP("'limits':{'max_body_bytes':-1}"), "limits.max_body_bytes: expected a non-negative integer");
    EXPECT_ERROR(WITH_TOP("'limits':{'buffer_bytes':1024}"), "limits.buffer_bytes: must be between 4096 and 16777216");
    EXPECT_ERROR(WITH_TOP("'limits':{'max_connections':0}"), "limits.max_connections: expected a positive integer");
    EXPECT_ERROR(WITH_TOP("'limits':{'max_pipelined':5000}"), "limits.max_pipelined: must be between 1 and 1024");
    EXPECT_ERROR(WITH_TOP("'limits':{'max_idle_upstream':1e300}"), "limits.max_idle_upstream: expected a non-negative integer");
    EXPECT_ERROR(WITH_TOP("'limits':{'idle_timeout':'0s'}"), "limits.idle_timeout: must be at least 1ms, got \"0s\"");
    EXPECT_ERROR(WITH_TOP("'limits':7"), "limits: expected an object, got 7");
    EXPECT_ERROR("{" LISTENERS ",'clusters':[]," ROUTES "}", "clusters: expected an object, got an array");
    EXPECT_ERROR("{" LISTENERS ",'clusters':{}," ROUTES "}", "clusters: expected at least one cluster");
    EXPECT_ERROR("{" LISTENERS "," ROUTES "}", "clusters: required key is missing");
    EXPECT_ERROR("{" LISTENERS ",'clusters':{'local':[]}," ROUTES "}", "clusters.local: expected an object, got an array");
    EXPECT_ERROR("{" LISTENERS ",'clusters':{'local':{}}," ROUTES "}", "clusters.local.endpoints: required key is missing");
    EXPECT_ERROR("{" LISTENERS ",'clusters':{'local':{'endpoints':[]}}," ROUTES "}",
                 "clusters.local.endpoints: expected a non-empty array, got an empty array");
    EXPECT_ERROR("{" LISTENERS ",'clusters':{'local':{'endpoints':[8081]}}," ROUTES "}",
                 "clusters.local.endpoints[0]: expected a \"host:port\" string, got 8081");
    EXPECT_ERROR("{" LISTENERS ",'clusters':{'local':{'endpoints':['127.0.0.1:8081']},'a b':{'endpoints':['127.0.0.1:1']}}," ROUTES "}",
                 "clusters[\"a b\"]: invalid name \"a b\"");
    EXPECT_ERROR("{" LISTENERS ",'clusters':{'local':{'endpoints':['127.0.0.1:8081']},'local':{'endpoints':['127.0.0.1:1']}}," ROUTES "}",
                 "clusters.local: duplicate cluster name");
    EXPECT_ERROR(WITH_CLUSTER("'protocol':'http2'"), "clusters.local.protocol: unknown value \"http2\" (expected one of: http1, h2c, h2)");
    EXPECT_ERROR(WITH_CLUSTER("'protocol':2"), "clusters.local.protocol: expected a string (one of: http1, h2c, h2), got 2");
    EXPECT_ERROR(WITH_CLUSTER("'lb':'random'"), "clusters.local.lb: unknown value \"random\" (expected one of: least_request, round_robin)");
    EXPECT_ERROR(WITH_CLUSTER("'tls':{'cert':'c'}"), "clusters.local.tls.key: required when cert is set");
    EXPECT_ERROR(WITH_CLUSTER("'tls':{'key':'k'}"), "clusters.local.tls.cert: required when key is set");
    EXPECT_ERROR(WITH_CLUSTER("'tls':{'insecure_skip_verify':1}"), "clusters.local.tls.insecure_skip_verify: expected true or false, got 1");
    EXPECT_ERROR(WITH_CLUSTER("'health_check':{}"), "clusters.local.health_check.path: required key is missing");
    EXPECT_ERROR(WITH_CLUSTER("'health_check':{'path':'health'}"), "clusters.local.health_check.path: must start with '/'");
    EXPECT_ERROR(WITH_CLUSTER("'health_check':{'path':'/h','interval':'1s','timeout':'1s'}"),
                 "clusters.local.health_check.timeout: must be shorter than interval (1s)");
    EXPECT_ERROR(WITH_CLUSTER("'health_check':{'path':'/h','healthy_threshold':0}"),
                 "clusters.local.health_check.healthy_threshold: expected a positive integer");
    EXPECT_ERROR(WITH_CLUSTER("'health_check':'/h'"), "clusters.local.health_check: expected an object or null");
    EXPECT_ERROR(WITH_CLUSTER("'health_check':{'grpc_service':''}"),
                 "clusters.local.health_check.grpc_service: needs an HTTP/2 cluster (protocol \"h2c\" or \"h2\"), "
                 "got protocol \"http1\"");
    EXPECT_ERROR(WITH_CLUSTER("'protocol':'h2c','health_check':{'grpc_service':1}"),
                 "clusters.local.health_check.grpc_service: expected a string or null, got 1");
    EXPECT_ERROR(WITH_CLUSTER("'protocol':'h2c','health_check':{'grpc_service':'s','expected_statuses':[200]}"),
                 "clusters.local.health_check.expected_statuses: not used with grpc_service");
    EXPECT_ERROR(WITH_CLUSTER("'protocol':'h2c','health_check':{'grpc_service':null}"),
                 "clusters.local.health_check.path: required key is missing");
    EXPECT_ERROR(WITH_CLUSTER("'outlier_detection':{'max_ejection_percent':101}"),
                 "clusters.local.outlier_detection.max_ejection_percent: must be between 0 and 100, got 101");
    EXPECT_ERROR(WITH_CLUSTER("'outlier_detection':{'success_rate_stdev_factor':0}"),
                 "clusters.local.outlier_detection.success_rate_stdev_factor: must be greater than 0");
    EXPECT_ERROR(WITH_CLUSTER("'outlier_detection':{'success_rate_stdev_factor':'1.9'}"),
                 "clusters.local.outlier_detection.success_rate_stdev_factor: expected a number, got \"1.9\"");
    EXPECT_ERROR(WITH_CLUSTER("'outlier_detection':{'base_ejection_time':'60s','max_ejection_time':'30s'}"),
                 "clusters.local.outlier_detection.max_ejection_time: must not be shorter than base_ejection_time (1m)");
    EXPECT_ERROR(WITH_CLUSTER("'circuit_breakers':null"), "clusters.local.circuit_breakers: expected an object, got null");
    EXPECT_ERROR(WITH_CLUSTER("'circuit_breakers':{'max_requests':0}"),
                 "clusters.local.circuit_breakers.max_requests: expected a positive integer");
    EXPECT_ERROR(WITH_CLUSTER("'circuit_breakers':{'max_retries':-3}"),
                 "clusters.local.circuit_breakers.max_retries: expected a non-negative integer");
}

static void test_route_errors(void)
{
    EXPECT_ERROR("{" LISTENERS "," CLUSTERS "}", "routes: required key is missing");
    EXPECT_ERROR("{" LISTENERS "," CLUSTERS ",'routes':[]}", "routes: expected a non-empty array");
    EXPECT_ERROR("{" LISTENERS "," CLUSTERS ",'routes':[{'split':[{'cluster':'local','weight':1}]}]}",
                 "routes[0].name: required key is missing");
    EXPECT_ERROR("{" LISTENERS "," CLUSTERS ",'routes':[{'name':'a/b','split':[{'cluster':'local','weight':1}]}]}",
                 "routes[0].name: invalid name \"a/b\"");
    EXPECT_ERROR("{" LISTENERS "," CLUSTERS ",'routes':[{'name':'r'}]}", "routes[0].split: required key is missing");
    EXPECT_ERROR("{" LISTENERS "," CLUSTERS ",'routes':[{'name':'r','split':[]}]}", "routes[0].split: expected a non-empty array");
    EXPECT_ERROR(WITH_SPLIT("[{'cluster':'blue','weight':90},{'cluster':'gren','weight':10}]"),
                 "routes[0].split[1].cluster: unknown cluster \"gren\"");
    EXPECT_ERROR(WITH_SPLIT("[{'cluster':'blue','weight':0},{'cluster':'green','weight':0}]"),
                 "routes[0].split: all weights are 0");
    EXPECT_ERROR(WITH_SPLIT("[{'cluster':'blue','weight':50},{'cluster':'blue','weight':50}]"),
                 "routes[0].split[1].cluster: cluster \"blue\" appears more than once");
    EXPECT_ERROR(WITH_SPLIT("[{'cluster':'blue'}]"), "routes[0].split[0].weight: required key is missing");
    EXPECT_ERROR(WITH_SPLIT("[{'weight':1}]"), "routes[0].split[0].cluster: required key is missing");
    EXPECT_ERROR(WITH_SPLIT("[{'cluster':1,'weight':1}]"), "routes[0].split[0].cluster: expected a cluster name, got 1");
    EXPECT_ERROR(WITH_SPLIT("[{'cluster':'blue','weight':-1}]"), "routes[0].split[0].weight: expected a non-negative integer");
    EXPECT_ERROR(WITH_SPLIT("[{'cluster':'blue','weight':1000001}]"),
                 "routes[0].split[0].weight: must be between 0 and 1000000, got 1000001");
    EXPECT_ERROR(WITH_SPLIT("[{'cluster':'blue','weight':0.5}]"), "routes[0].split[0].weight: expected a non-negative integer, got 0.5");
    EXPECT_ERROR(WITH_SPLIT("['blue']"), "routes[0].split[0]: expected an object, got \"blue\"");
    EXPECT_ERROR("{" LISTENERS "," CLUSTERS ",'routes':[" "{'name':'r','split':[{'cluster':'local','weight':1}]},"
                 "{'name':'r','split':[{'cluster':'local','weight':1}]}]}",
                 "routes[1].name: duplicate route name \"r\" (also routes[0])");
    EXPECT_ERROR("{" LISTENERS "," CLUSTERS ",'routes':[7]}", "routes[0]: expected an object, got 7");

    EXPECT_ERROR(WITH_ROUTE("'match':[]"), "routes[0].match: expected an object or null, got an array");
    EXPECT_ERROR(WITH_ROUTE("'match':{'path_prefix':'api'}"), "routes[0].match.path_prefix: must start with '/', got \"api\"");
    EXPECT_ERROR(WITH_ROUTE("'match':{'path':'x'}"), "routes[0].match.path: must start with '/'");
    EXPECT_ERROR(WITH_ROUTE("'match':{'path':'/a','path_prefix':'/b'}"),
                 "routes[0].match: \"path\" and \"path_prefix\" are mutually exclusive");
    EXPECT_ERROR(WITH_ROUTE("'match':{'method':'GE T'}"), "routes[0].match.method: invalid method \"GE T\"");
    EXPECT_ERROR(WITH_ROUTE("'match':{'method':1}"), "routes[0].match.method: expected a string or null, got 1");
    EXPECT_ERROR(WITH_ROUTE("'match':{'host':'a.example:8080'}"), "routes[0].match.host: must not contain a port");
    EXPECT_ERROR(WITH_ROUTE("'match':{'headers':{}}"), "routes[0].match.headers: expected an array or null, got an object");
    EXPECT_ERROR(WITH_ROUTE("'match':{'headers':[{'name':'a'}]}"),
                 "routes[0].match.headers[0]: expected exactly one of \"exact\", \"prefix\" or \"present\"");
    EXPECT_ERROR(WITH_ROUTE("'match':{'headers':[{'name':'a','exact':'x','prefix':'y'}]}"),
                 "routes[0].match.headers[0]: expected exactly one of");
    EXPECT_ERROR(WITH_ROUTE("'match':{'headers':[{'exact':'x'}]}"), "routes[0].match.headers[0].name: required key is missing");
    EXPECT_ERROR(WITH_ROUTE("'match':{'headers':[{'name':'a b','exact':'x'}]}"),
                 "routes[0].match.headers[0].name: invalid header name \"a b\"");
    EXPECT_ERROR(WITH_ROUTE("'match':{'headers':[{'name':'a','present':false}]}"),
                 "routes[0].match.headers[0].present: must be true");
    EXPECT_ERROR(WITH_ROUTE("'match':{'headers':[{'name':'a','exact':null}]}"),
                 "routes[0].match.headers[0].exact: expected a string, got null");

    EXPECT_ERROR(WITH_ROUTE("'overrides':{}"), "routes[0].overrides: expected an array or null");
    EXPECT_ERROR(WITH_ROUTE("'overrides':[{'equals':'x','cluster':'local'}]"),
                 "routes[0].overrides[0]: expected exactly one of \"header\" or \"cookie\"");
    EXPECT_ERROR(WITH_ROUTE("'overrides':[{'header':'a','cookie':'b','equals':'x','cluster':'local'}]"),
                 "routes[0].overrides[0]: expected exactly one of \"header\" or \"cookie\"");
    EXPECT_ERROR(WITH_ROUTE("'overrides':[{'header':'x-canary','cluster':'local'}]"),
                 "routes[0].overrides[0].equals: required key is missing");
    EXPECT_ERROR(WITH_ROUTE("'overrides':[{'header':'x-canary','equals':'1','cluster':'nope'}]"),
                 "routes[0].overrides[0].cluster: unknown cluster \"nope\"");
    EXPECT_ERROR(WITH_ROUTE("'overrides':[{'cookie':'a;b','equals':'1','cluster':'local'}]"),
                 "routes[0].overrides[0].cookie: invalid cookie name \"a;b\"");

    EXPECT_ERROR(WITH_ROUTE("'sticky':{}"), "routes[0].sticky: expected exactly one of \"header\", \"cookie\" or \"client_address\"");
    EXPECT_ERROR(WITH_ROUTE("'sticky':{'header':'a','cookie':'b'}"), "routes[0].sticky: expected exactly one of");
    EXPECT_ERROR(WITH_ROUTE("'sticky':{'client_address':false}"), "routes[0].sticky.client_address: must be true");
    EXPECT_ERROR(WITH_ROUTE("'sticky':{'header':''}"), "routes[0].sticky.header: must not be empty");
    EXPECT_ERROR(WITH_ROUTE("'sticky':'x-user'"), "routes[0].sticky: expected an object or null");

    EXPECT_ERROR(WITH_ROUTE("'timeout':15"), "routes[0].timeout: invalid duration 15: durations are strings with a unit");
    EXPECT_ERROR(WITH_ROUTE("'timeout':'15'"), "routes[0].timeout: invalid duration \"15\" (use a number with a unit: 250ms, 30s, 5m)");
    EXPECT_ERROR(WITH_ROUTE("'timeout':true"), "routes[0].timeout: expected a duration such as \"30s\", got true");
    EXPECT_ERROR(WITH_ROUTE("'retry':null"), "routes[0].retry: expected an object, got null");
    EXPECT_ERROR(WITH_ROUTE("'retry':{'attempts':0}"), "routes[0].retry.attempts: expected a positive integer");
    EXPECT_ERROR(WITH_ROUTE("'retry':{'attempts':11}"), "routes[0].retry.attempts: must be between 1 and 10, got 11");
    EXPECT_ERROR(WITH_ROUTE("'retry':{'on':['5xx','4xx']}"), "routes[0].retry.on[1]: unknown retry condition \"4xx\"");
    EXPECT_ERROR(WITH_ROUTE("'retry':{'on':'5xx'}"), "routes[0].retry.on: expected an array, got \"5xx\"");
    EXPECT_ERROR(WITH_ROUTE("'retry':{'budget_percent':101}"), "routes[0].retry.budget_percent: must be between 0 and 100");
    EXPECT_ERROR(WITH_ROUTE("'retry':{'per_try_timeout':'2 s'}"), "routes[0].retry.per_try_timeout: invalid duration \"2 s\"");
}

static void test_canary_errors(void)
{
    EXPECT_ERROR(WITH_ROUTE3("'canary':{'canary':'green'}"), "routes[0].canary.stable: required key is missing");
    EXPECT_ERROR(WITH_ROUTE3("'canary':{'stable':'blue'}"), "routes[0].canary.canary: required key is missing");
    EXPECT_ERROR(WITH_ROUTE3("'canary':{'stable':'blu','canary':'green'}"), "routes[0].canary.stable: unknown cluster \"blu\"");
    EXPECT_ERROR(WITH_ROUTE3("'canary':{'stable':'blue','canary':'blue'}"),
                 "routes[0].canary.canary: must differ from stable (\"blue\")");
    EXPECT_ERROR(WITH_ROUTE3("'canary':{'stable':'blue','canary':'green','mode':'linear'}"),
                 "routes[0].canary.mode: unknown value \"linear\" (expected one of: progressive, blue_green, ab)");
    EXPECT_ERROR(WITH_ROUTE3("'canary':{'stable':'blue','canary':'green','interval':30}"),
                 "routes[0].canary.interval: invalid duration 30");
    EXPECT_ERROR(WITH_ROUTE3("'canary':{'stable':'blue','canary':'green','interval':'10ms'}"),
                 "routes[0].canary.interval: must be at least 100ms, got \"10ms\"");
    EXPECT_ERROR(WITH_ROUTE3("'canary':{'stable':'blue','canary':'green','step_weight':0}"),
                 "routes[0].canary.step_weight: expected a positive integer");
    EXPECT_ERROR(WITH_ROUTE3("'canary':{'stable':'blue','canary':'green','max_weight':101}"),
                 "routes[0].canary.max_weight: must be between 1 and 100");
    EXPECT_ERROR(WITH_ROUTE3("'canary':{'stable':'blue','canary':'green','step_weight':60}"),
                 "routes[0].canary.step_weight: must not exceed max_weight (50)");
    EXPECT_ERROR(WITH_ROUTE3("'canary':{'stable':'blue','canary':'green','threshold':0}"),
                 "routes[0].canary.threshold: expected a positive integer");
    EXPECT_ERROR(WITH_ROUTE3("'canary':{'stable':'blue','canary':'green','success_rate_min':100.5}"),
                 "routes[0].canary.success_rate_min: must be at least 0 and at most 100, got 100.5");
    EXPECT_ERROR(WITH_ROUTE3("'canary':{'stable':'blue','canary':'green','p99_max':'0s'}"),
                 "routes[0].canary.p99_max: must be at least 1ms");
    EXPECT_ERROR(WITH_ROUTE3("'canary':{'stable':'blue','canary':'green','compare_to_stable':'yes'}"),
                 "routes[0].canary.compare_to_stable: expected true or false");
    EXPECT_ERROR(WITH_ROUTE3("'canary':{'stable':'blue','canary':'green','webhooks':{'promoted':'ftp://x'}}"),
                 "routes[0].canary.webhooks.promoted: expected an http:// or https:// URL, got \"ftp://x\"");
    EXPECT_ERROR(WITH_ROUTE3("'canary':{'stable':'blue','canary':'green','webhooks':[]}"),
                 "routes[0].canary.webhooks: expected an object or null");
    EXPECT_ERROR(WITH_ROUTE3("'canary':'green'"), "routes[0].canary: expected an object or null, got \"green\"");
}

static void test_address_errors(void)
{
    EXPECT_ERROR("{'listeners':[{'address':'localhost:80'}]," CLUSTERS "," ROUTES "}",
                 "listeners[0].address: invalid address \"localhost:80\" (use a literal IPv4 or [IPv6] address");
    EXPECT_ERROR("{'listeners':[{'address':'0.0.0.0'}]," CLUSTERS "," ROUTES "}", "listeners[0].address: invalid address \"0.0.0.0\"");
    EXPECT_ERROR("{'listeners':[{'address':'::1:80'}]," CLUSTERS "," ROUTES "}", "listeners[0].address: invalid address \"::1:80\"");
    EXPECT_ERROR("{'listeners':[{'address':8080}]," CLUSTERS "," ROUTES "}", "listeners[0].address: expected a string, got 8080");
    EXPECT_ERROR("{'listeners':[{'name':'x'}]," CLUSTERS "," ROUTES "}", "listeners[0].address: required key is missing");
    EXPECT_ERROR("{'listeners':[{'address':'127.0.0.1:8080'},{'address':'127.0.0.1:8080'}]," CLUSTERS "," ROUTES "}",
                 "listeners[1].address: duplicate address \"127.0.0.1:8080\" (also listeners[0])");
    EXPECT_ERROR("{'listeners':[{'name':'a','address':'127.0.0.1:8080'},{'name':'a','address':'127.0.0.1:8081'}],"
                 CLUSTERS "," ROUTES "}",
                 "listeners[1].name: duplicate listener name \"a\" (also listeners[0])");
    EXPECT_ERROR(WITH_TOP("'admin':{'address':'127.0.0.1:8080'}"),
                 "admin.address: address \"127.0.0.1:8080\" is also used by listeners[0]");
    EXPECT_ERROR(WITH_TOP("'admin':{'address':'127.0.0.1:99999'}"), "admin.address: invalid address \"127.0.0.1:99999\"");
    EXPECT_ERROR(WITH_CLUSTER("'dns_refresh':'10ms'"), "clusters.local.dns_refresh: must be at least 100ms, got \"10ms\"");
    EXPECT_ERROR(WITH_CLUSTER("'connect_timeout':'1 s'"),
                 "clusters.local.connect_timeout: invalid duration \"1 s\" (use a number with a unit: 250ms, 30s, 5m)");
    EXPECT_ERROR(WITH_CLUSTER("'connect_timeout':1"), "clusters.local.connect_timeout: invalid duration 1: durations are strings with a unit, e.g. \"1s\"");

    static const char *const bad_endpoints[] = {
        "noport", "host:", "host:0", "host:65536", "host:80x", ":80", "[::1]80", "[::1:80", "::1:80",
        "[nothost]:80", "bad_-.example:80", "-a.example:80", "a..b:80", "1.2.3:80", "256.1.1.1:80",
        "a b:80", "host:-1", "host:123456",
    };
    for (size_t i = 0; i < sizeof bad_endpoints / sizeof bad_endpoints[0]; i++) {
        char json[512];
        snprintf(json, sizeof json, "{" LISTENERS ",'clusters':{'local':{'endpoints':['10.0.0.1:80','%s']}}," ROUTES "}",
                 bad_endpoints[i]);
        veer_config_errors_t errs = {0};
        veer_config_t *cfg = parse_q(json, &errs);
        bool found = false;
        for (size_t e = 0; e < errs.count; e++)
            found = found || (strstr(errs.messages[e], "clusters.local.endpoints[1]: invalid") &&
                              strstr(errs.messages[e], bad_endpoints[i]));
        CHECK(cfg == NULL);
        CHECK(found);
        if (!found)
            fprintf(stderr, "    endpoint %s not rejected as expected\n", bad_endpoints[i]);
        veer_config_free(cfg);
        veer_config_errors_clear(&errs);
    }
    EXPECT_ERROR("{" LISTENERS ",'clusters':{'local':{'endpoints':['10.0.0.1:80','10.0.0.1:80']}}," ROUTES "}",
                 "clusters.local.endpoints[1]: duplicate endpoint \"10.0.0.1:80\" (also endpoints[0])");
}

static void test_good_endpoints(void)
{
    static const struct {
        const char *text, *host;
        uint16_t port;
        bool literal;
    } cases[] = {
        {"10.0.0.1:80", "10.0.0.1", 80, true},
        {"[::1]:8080", "::1", 8080, true},
        {"[fd00::1:2]:65535", "fd00::1:2", 65535, true},
        {"embed.svc.cluster.local:1", "embed.svc.cluster.local", 1, false},
        {"localhost:8081", "localhost", 8081, false},
        {"pod-0.embed_svc.example.:443", "pod-0.embed_svc.example.", 443, false},
        {"a1:80", "a1", 80, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char json[512];
        snprintf(json, sizeof json, "{" LISTENERS ",'clusters':{'local':{'endpoints':['%s']}}," ROUTES "}", cases[i].text);
        veer_config_errors_t errs = {0};
        veer_config_t *cfg = parse_q(json, &errs);
        print_errors(&errs);
        CHECK(cfg != NULL);
        if (cfg) {
            const veer_endpoint_config_t *ep = &cfg->clusters[0].endpoints[0];
            CHECK_STR(ep->host, cases[i].host);
            CHECK(ep->port == cases[i].port);
            CHECK(ep->is_literal == cases[i].literal);
        }
        veer_config_free(cfg);
        veer_config_errors_clear(&errs);
    }
}

/* Every error in a file is reported, not just the first. */
static void test_multiple_errors(void)
{
    veer_config_errors_t errs = {0};
    veer_config_t *cfg = parse_q("{'workers':-1,"
                                 "'listeners':[{'address':'nowhere'}],"
                                 "'limits':{'idle_timeout':60},"
                                 "'clusters':{'blue':{'endpoints':['10.0.0.1:80'],'connect_timeout':'1 s'},"
                                 "            'green':{'endpoints':['10.0.0.2:80'],'lbb':'round_robin'}},"
                                 "'routes':[{'name':'r','split':[{'cluster':'blue','weight':90},"
                                 "                               {'cluster':'gren','weight':10}]},"
                                 "          {'name':'s','matchx':{},'split':[{'cluster':'green','weight':1}]}]}",
                                 &errs);
    CHECK(cfg == NULL);
    CHECK(errs.count == 7);
    CHECK(errs.dropped == 0);
    CHECK(has_error(&errs, "workers: expected a non-negative integer, got -1"));
    CHECK(has_error(&errs, "listeners[0].address: invalid address \"nowhere\""));
    CHECK(has_error(&errs, "limits.idle_timeout: invalid duration 60"));
    CHECK(has_error(&errs, "clusters.blue.connect_timeout: invalid duration \"1 s\" (use a number with a unit: 250ms, 30s, 5m)"));
    CHECK(has_error(&errs, "clusters.green.lbb: unknown key (did you mean \"lb\"?)"));
    CHECK(has_error(&errs, "routes[0].split[1].cluster: unknown cluster \"gren\""));
    CHECK(has_error(&errs, "routes[1].matchx: unknown key"));
    if (errs.count != 7)
        print_errors(&errs);
    /* The exact message of SPEC's `veer check` example. */
    bool exact = false;
    for (size_t i = 0; i < errs.count; i++)
        exact = exact || strcmp(errs.messages[i], "routes[0].split[1].cluster: unknown cluster \"gren\"") == 0;
    CHECK(exact);
    veer_config_errors_clear(&errs);
    CHECK(errs.count == 0 && errs.dropped == 0);

    /* More errors than fit: the rest are counted as dropped. */
    char json[4096];
    size_t used = (size_t)snprintf(json, sizeof json, "{" LISTENERS "," CLUSTERS "," ROUTES);
    for (int i = 0; i < VEER_CONFIG_MAX_ERRORS + 10; i++)
        used += (size_t)snprintf(json + used, sizeof json - used, ",'k%d':0", i);
    snprintf(json + used, sizeof json - used, "}");
    cfg = parse_q(json, &errs);
    CHECK(cfg == NULL);
    CHECK(errs.count == VEER_CONFIG_MAX_ERRORS);
    CHECK(errs.dropped == 10);
    veer_config_errors_clear(&errs);

    /* A NULL error list is allowed. */
    char *bad = q("{'workers':'x'}");
    CHECK(veer_config_parse(bad, strlen(bad), NULL) == NULL);
    free(bad);
}

static void test_syntax_errors(void)
{
    EXPECT_ERROR("{\n  'workers': 0,\n  'listeners': [\n}\n", "line 4, column 1: invalid JSON");
    EXPECT_ERROR("{'workers': 0 'x': 1}", "line 1, column 15: invalid JSON near `\"x\": 1}`");
    EXPECT_ERROR(MINIMAL " trailing", "line 1, column");
    EXPECT_ERROR(MINIMAL " trailing", "invalid JSON near `trailing`");
    EXPECT_ERROR("", "line 1, column 1: invalid JSON: unexpected end of input");
    EXPECT_ERROR("{\n'workers': 0,\n", "line 3, column 1: invalid JSON: unexpected end of input");

    const char nul[] = "{\"workers\": 0}\0{}";
    veer_config_errors_t errs = {0};
    CHECK(veer_config_parse(nul, sizeof nul - 1, &errs) == NULL);
    CHECK(has_error(&errs, "line 1, column 15: invalid JSON: a NUL byte"));
    veer_config_errors_clear(&errs);

    /* Whitespace around the document and a trailing newline are fine. */
    veer_config_t *cfg = parse_q("\n\t  " MINIMAL "  \n\n", &errs);
    CHECK(cfg != NULL);
    veer_config_free(cfg);
    /* A length shorter than the buffer parses only that prefix. */
    char *json = q(MINIMAL "garbage");
    cfg = veer_config_parse(json, strlen(json) - strlen("garbage"), &errs);
    CHECK(cfg != NULL);
    veer_config_free(cfg);
    free(json);
    veer_config_errors_clear(&errs);
}

static void test_durations(void)
{
    static const struct {
        const char *text;
        uint64_t ms;
    } good[] = {
        {"0s", 0}, {"0ms", 0}, {"0us", 0}, {"0h", 0}, {"0.000s", 0}, {"1ms", 1}, {"250ms", 250}, {"30s", 30000},
        {"5m", 300000}, {"1h", 3600000}, {"1500us", 2}, {"1000us", 1}, {"1us", 1}, {"999us", 1}, {"1001us", 2},
        {"1.5s", 1500}, {"0.5ms", 1}, {"0.0001s", 1}, {"0.25m", 15000}, {"1.5h", 5400000}, {"2.0005s", 2001},
        {"0.0000000001s", 1}, {"0.1000000000s", 100}, {"10.000000000000000001ms", 11}, {"007s", 7000},
        {"18446744073709s", 18446744073709000ull},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        uint64_t ms = 12345;
        int rc = veer_duration_parse(good[i].text, &ms);
        CHECK(rc == 0);
        CHECK(ms == good[i].ms);
        if (rc != 0 || ms != good[i].ms)
            fprintf(stderr, "    duration \"%s\": rc %d, %llu ms, want %llu\n", good[i].text, rc,
                    (unsigned long long)ms, (unsigned long long)good[i].ms);
    }
    static const char *const bad[] = {
        "", "s", "10", "1 s", " 1s", "1s ", "-1s", "+1s", "1.s", ".5s", "1,5s", "1sec", "1S", "1d", "1ns", "5mm",
        "1e3ms", "1.5.5s", "ms", "18446744073710s", "18446744073709552s", "99999999999999999999ms", "5124095576030432h", "0x10s",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint64_t ms = 777;
        int rc = veer_duration_parse(bad[i], &ms);
        CHECK(rc == -1);
        CHECK(ms == 777);
        if (rc != -1)
            fprintf(stderr, "    duration \"%s\" accepted as %llu ms\n", bad[i], (unsigned long long)ms);
    }
    uint64_t ms;
    CHECK(veer_duration_parse(NULL, &ms) == -1);
}

static void test_sockaddr(void)
{
    static const struct {
        const char *text;
        int family;
        uint16_t port;
        const char *addr;
    } good[] = {
        {"1.2.3.4:80", AF_INET, 80, "1.2.3.4"},
        {"0.0.0.0:8080", AF_INET, 8080, "0.0.0.0"},
        {"127.0.0.1:65535", AF_INET, 65535, "127.0.0.1"},
        {"[::1]:80", AF_INET6, 80, "::1"},
        {"[::]:9901", AF_INET6, 9901, "::"},
        {"[fd00::5]:1", AF_INET6, 1, "fd00::5"},
        {"[::ffff:10.0.0.1]:443", AF_INET6, 443, "::ffff:10.0.0.1"},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        struct sockaddr_storage ss;
        socklen_t len = 0;
        char text[INET6_ADDRSTRLEN];
        CHECK(veer_sockaddr_parse(good[i].text, &ss, &len) == 0);
        CHECK(ss.ss_family == good[i].family);
        if (good[i].family == AF_INET) {
            const struct sockaddr_in *sin = (const struct sockaddr_in *)&ss;
            CHECK(len == sizeof *sin);
            CHECK(ntohs(sin->sin_port) == good[i].port);
            CHECK(inet_ntop(AF_INET, &sin->sin_addr, text, sizeof text) && strcmp(text, good[i].addr) == 0);
        } else {
            const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&ss;
            CHECK(len == sizeof *sin6);
            CHECK(ntohs(sin6->sin6_port) == good[i].port);
            CHECK(inet_ntop(AF_INET6, &sin6->sin6_addr, text, sizeof text) && strcmp(text, good[i].addr) == 0);
        }
    }
    static const char *const bad[] = {
        "", "1.2.3.4", "1.2.3.4:", ":80", "localhost:80", "example.com:80", "1.2.3:80", "1.2.3.4.5:80",
        "256.0.0.1:80", "01.2.3.4:80", "1.2.3.4:0", "1.2.3.4:65536", "1.2.3.4:8o", "1.2.3.4:+80", "1.2.3.4: 80",
        " 1.2.3.4:80", "::1:80", "[::1]", "[::1]:", "[::1]80", "[::1:80", "[1.2.3.4]:80", "[zz::1]:80",
        "[::1]:80x", "1.2.3.4:000080",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct sockaddr_storage ss;
        socklen_t len = 0;
        int rc = veer_sockaddr_parse(bad[i], &ss, &len);
        CHECK(rc == -1);
        if (rc != -1)
            fprintf(stderr, "    address \"%s\" accepted\n", bad[i]);
    }
    struct sockaddr_storage ss;
    socklen_t len;
    CHECK(veer_sockaddr_parse(NULL, &ss, &len) == -1);
}

static void test_load(void)
{
    veer_config_errors_t errs = {0};
    CHECK(veer_config_load("/nonexistent/veer/config.json", &errs) == NULL);
    CHECK(errs.count == 1);
    CHECK(has_error(&errs, "/nonexistent/veer/config.json: cannot open: No such file or directory"));
    veer_config_errors_clear(&errs);

    CHECK(veer_config_load("/", &errs) == NULL);
    CHECK(has_error(&errs, "/: read error"));
    veer_config_errors_clear(&errs);

    static const char *const files[] = {"/config/sidecar.json", "/config/ingress.json"};
    for (size_t i = 0; i < 2; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s%s", VEER_SOURCE_DIR, files[i]);
        veer_config_t *cfg = veer_config_load(path, &errs);
        print_errors(&errs);
        CHECK(cfg != NULL);
        CHECK(errs.count == 0);
        if (cfg) {
            CHECK_STR(cfg->path, path);
            CHECK(cfg->json != NULL);
        }
        veer_config_free(cfg);
        veer_config_errors_clear(&errs);
    }

    char path[1024];
    snprintf(path, sizeof path, "%s/config/sidecar.json", VEER_SOURCE_DIR);
    veer_config_t *side = veer_config_load(path, &errs);
    CHECK(side != NULL);
    if (side) {
        CHECK(side->listener_count == 1);
        CHECK_STR(side->listeners[0].address, "0.0.0.0:8080");
        CHECK_STR(side->admin.address, "127.0.0.1:9901");
        CHECK(side->cluster_count == 1 && veer_config_cluster_index(side, "local") == 0);
        CHECK_STR(side->clusters[0].endpoints[0].host, "127.0.0.1");
        CHECK(side->clusters[0].endpoints[0].port == 8081);
        CHECK(side->route_count == 1);
    }
    veer_config_free(side);
    snprintf(path, sizeof path, "%s/config/ingress.json", VEER_SOURCE_DIR);
    veer_config_t *ing = veer_config_load(path, &errs);
    CHECK(ing != NULL);
    if (ing) {
        int embed = veer_config_route_index(ing, "embed");
        CHECK(embed >= 0);
        CHECK(ing->cluster_count == 3);
        if (embed >= 0) {
            const veer_route_config_t *r = &ing->routes[embed];
            CHECK(r->canary != NULL && r->canary->mode == VEER_CANARY_PROGRESSIVE);
            CHECK(r->sticky.enabled);
            CHECK(r->override_count >= 1);
            CHECK(r->retry.attempts >= 2);
        }
    }
    veer_config_free(ing);
    veer_config_errors_clear(&errs);

    veer_config_free(NULL);
    veer_config_errors_clear(NULL);
    CHECK(veer_config_cluster_index(NULL, "x") == -1);
    CHECK(veer_config_route_index(NULL, "x") == -1);
}

/* Every allocation failure gives NULL and an error count, never a crash or a leak. */
static void test_out_of_memory(void)
{
#ifdef VEER_TEST_NO_MALLOC_HOOKS
    printf("test_out_of_memory: skipped under AddressSanitizer\n");
#else
    char path[1024];
    snprintf(path, sizeof path, "%s/config/ingress.json", VEER_SOURCE_DIR);
    for (int use_file = 0; use_file < 2; use_file++) {
        long budget = 0;
        for (; budget < 100000; budget++) {
            veer_config_errors_t errs = {0};
            long live_before = live_allocs;
            alloc_budget = budget;
            veer_config_t *cfg = use_file ? veer_config_load(path, &errs)
                                          : veer_config_parse(spec_example, strlen(spec_example), &errs);
            alloc_budget = -1;
            bool done = cfg != NULL;
            if (!cfg && errs.count + errs.dropped == 0) {
                CHECK(errs.count + errs.dropped > 0);
                fprintf(stderr, "    no error reported with %ld allocations\n", budget);
            }
            veer_config_free(cfg);
            veer_config_errors_clear(&errs);
            if (live_allocs != live_before) {
                CHECK(live_allocs == live_before);
                fprintf(stderr, "    %ld allocations leaked with %ld allowed\n", live_allocs - live_before, budget);
                break;
            }
            if (done)
                break;
        }
        CHECK(budget > 50 && budget < 100000);
    }
#endif
}

/* ---- canary keys of issue 6: step_weights, promotion steps, iterations,
 * mirror, inconclusive limit, statistics, A/B match, webhooks ------------- */

#define CANARY3(extra) WITH_ROUTE3("'canary':{'stable':'blue','canary':'green'" extra "}")

static void test_canary_new_keys(void)
{
    veer_config_errors_t errs = {0};
    veer_config_t *cfg = parse_q(CANARY3(""), &errs);
    print_errors(&errs);
    CHECK(cfg != NULL);
    const veer_canary_config_t *c = cfg ? cfg->routes[0].canary : NULL;
    CHECK(c != NULL);
    if (c) {
        CHECK(c->step_weights == NULL && c->step_weight_count == 0 && c->step_weight == 10 && c->max_weight == 50);
        CHECK(c->promotion_step_weight == 0 && c->iterations == 10 && c->mirror_iterations == 0);
        CHECK(c->max_inconclusive == 3 && c->confidence == 0.99 && c->p99_ratio_max == 1.5);
        CHECK(c->match == NULL && c->webhook_phase_change_count == 0 && c->webhook_confirm_promotion == NULL);
        CHECK(c->webhook_timeout_ms == 5000 && c->webhook_retries == 3);
    }
    veer_config_free(cfg);

    cfg = parse_q(CANARY3(",'mode':'ab','iterations':4,'mirror_iterations':2,'max_inconclusive':7,"
                          "'confidence':0.95,'p99_ratio_max':2.5,'promotion_step_weight':25,"
                          "'match':{'header':'X-Canary','equals':'always'},"
                          "'webhooks':{'promoted':null,'phase_change':['http://cd/a','https://cd/b'],"
                          "'confirm_promotion':'http://cd/confirm','timeout':'2s','retries':0}"),
                  &errs);
    print_errors(&errs);
    CHECK(cfg != NULL);
    c = cfg ? cfg->routes[0].canary : NULL;
    if (c) {
        CHECK(c->mode == VEER_CANARY_AB && c->iterations == 4 && c->mirror_iterations == 2);
        CHECK(c->max_inconclusive == 7 && c->confidence == 0.95 && c->p99_ratio_max == 2.5);
        CHECK(c->promotion_step_weight == 25);
        CHECK(c->match != NULL);
        if (c->match) {
            CHECK(c->match->kind == VEER_KEY_HEADER);
            CHECK_STR(c->match->name, "x-canary"); /* header names lower-cased */
            CHECK_STR(c->match->equals, "always");
            CHECK(c->match->cluster == 1); /* the canary */
        }
        CHECK(c->webhook_phase_change_count == 2);
        CHECK_STR(c->webhook_phase_change[0], "http://cd/a");
        CHECK_STR(c->webhook_phase_change[1], "https://cd/b");
        CHECK_STR(c->webhook_confirm_promotion, "http://cd/confirm");
        CHECK(c->webhook_promoted == NULL);
        CHECK(c->webhook_timeout_ms == 2000 && c->webhook_retries == 0);
    }
    veer_config_free(cfg);

    /* step_weights: max_weight is the last step when not given */
    cfg = parse_q(CANARY3(",'step_weights':[1,5,25,60]"), &errs);
    print_errors(&errs);
    c = cfg ? cfg->routes[0].canary : NULL;
    CHECK(c && c->step_weight_count == 4 && c->step_weights[0] == 1 && c->step_weights[3] == 60);
    CHECK(c && c->max_weight == 60);
    veer_config_free(cfg);
    cfg = parse_q(CANARY3(",'step_weights':[10,50],'max_weight':50,'mode':'blue_green','match':null"), &errs);
    print_errors(&errs);
    CHECK(cfg && cfg->routes[0].canary->max_weight == 50 && cfg->routes[0].canary->match == NULL);
    veer_config_free(cfg);
    cfg = parse_q(CANARY3(",'match':{'cookie':'Beta','equals':''},'mode':'ab'"), &errs);
    print_errors(&errs);
    c = cfg ? cfg->routes[0].canary : NULL;
    CHECK(c && c->match && c->match->kind == VEER_KEY_COOKIE && strcmp(c->match->name, "Beta") == 0);
    CHECK(c && c->match && c->match->equals_len == 0);
    veer_config_free(cfg);
    cfg = parse_q(CANARY3(",'webhooks':null"), &errs);
    CHECK(cfg && cfg->routes[0].canary->webhook_timeout_ms == 5000);
    veer_config_free(cfg);
    veer_config_errors_clear(&errs);
}

static void test_canary_new_key_errors(void)
{
    EXPECT_ERROR(CANARY3(",'step_weight':10,'step_weights':[10]"),
                 "routes[0].canary: \"step_weight\" and \"step_weights\" are mutually exclusive");
    EXPECT_ERROR(CANARY3(",'step_weights':[]"), "routes[0].canary.step_weights: expected a non-empty array");
    EXPECT_ERROR(CANARY3(",'step_weights':5"), "routes[0].canary.step_weights: expected a non-empty array, got 5");
    EXPECT_ERROR(CANARY3(",'step_weights':[10,0]"),
                 "routes[0].canary.step_weights[1]: expected an integer between 1 and 100, got 0");
    EXPECT_ERROR(CANARY3(",'step_weights':[10,101]"), "routes[0].canary.step_weights[1]: expected an integer");
    EXPECT_ERROR(CANARY3(",'step_weights':[10,'20']"), "routes[0].canary.step_weights[1]: expected an integer");
    EXPECT_ERROR(CANARY3(",'step_weights':[10,30,30]"),
                 "routes[0].canary.step_weights[2]: must be greater than step_weights[1] (30), got 30");
    EXPECT_ERROR(CANARY3(",'step_weights':[10,40],'max_weight':50"),
                 "routes[0].canary.step_weights: the last of step_weights (40) must equal max_weight (50)");
    EXPECT_ERROR(CANARY3(",'promotion_step_weight':101"),
                 "routes[0].canary.promotion_step_weight: must be between 0 and 100, got 101");
    EXPECT_ERROR(CANARY3(",'mode':'blue_green','iterations':0"), "routes[0].canary.iterations: expected a positive integer");
    EXPECT_ERROR(CANARY3(",'iterations':3"),
                 "routes[0].canary.iterations: only used when mode is \"blue_green\" or \"ab\"");
    EXPECT_ERROR(CANARY3(",'mirror_iterations':-1"), "routes[0].canary.mirror_iterations: expected a non-negative integer");
    EXPECT_ERROR(CANARY3(",'max_inconclusive':0"), "routes[0].canary.max_inconclusive: expected a positive integer");
    EXPECT_ERROR(CANARY3(",'confidence':0.5"), "routes[0].canary.confidence: must be greater than 0.5 and at most 0.999999, got 0.5");
    EXPECT_ERROR(CANARY3(",'confidence':99"), "routes[0].canary.confidence: must be greater than 0.5");
    EXPECT_ERROR(CANARY3(",'confidence':'99%'"), "routes[0].canary.confidence: expected a number, got \"99%\"");
    EXPECT_ERROR(CANARY3(",'p99_ratio_max':0.9"), "routes[0].canary.p99_ratio_max: must be at least 1 and at most 100, got 0.9");
    EXPECT_ERROR(CANARY3(",'mode':'ab'"),
                 "routes[0].canary.match: required when mode is \"ab\" (e.g. {\"header\": \"x-canary\", \"equals\": \"1\"})");
    EXPECT_ERROR(CANARY3(",'mode':'ab','match':null"), "routes[0].canary.match: must not be null when mode is \"ab\"");
    EXPECT_ERROR(CANARY3(",'match':{'header':'x','equals':'1'}"), "routes[0].canary.match: only used when mode is \"ab\"");
    EXPECT_ERROR(CANARY3(",'mode':'ab','match':{'header':'x','cookie':'y','equals':'1'}"),
                 "routes[0].canary.match: expected exactly one of \"header\" or \"cookie\"");
    EXPECT_ERROR(CANARY3(",'mode':'ab','match':{'header':'x'}"), "routes[0].canary.match.equals: required key is missing");
    EXPECT_ERROR(CANARY3(",'mode':'ab','match':{'header':'a b','equals':'1'}"),
                 "routes[0].canary.match.header: invalid header name \"a b\"");
    EXPECT_ERROR(CANARY3(",'mode':'ab','match':{'header':'x','equals':'1','cluster':'blue'}"),
                 "routes[0].canary.match.cluster: unknown key");
    EXPECT_ERROR(CANARY3(",'mode':'ab','match':'x-canary'"), "routes[0].canary.match: expected an object or null");
    EXPECT_ERROR(CANARY3(",'webhooks':{'phase_change':['ftp://x']}"),
                 "routes[0].canary.webhooks.phase_change[0]: expected an http:// or https:// URL, got \"ftp://x\"");
    EXPECT_ERROR(CANARY3(",'webhooks':{'phase_change':'http://x'}"),
                 "routes[0].canary.webhooks.phase_change: expected an array or null");
    EXPECT_ERROR(CANARY3(",'webhooks':{'phase_change':['http://1','http://2','http://3','http://4','http://5',"
                         "'http://6','http://7','http://8','http://9']}"),
                 "routes[0].canary.webhooks.phase_change: at most 8 URLs, got 9");
    EXPECT_ERROR(CANARY3(",'webhooks':{'confirm_promotion':'cd/confirm'}"),
                 "routes[0].canary.webhooks.confirm_promotion: expected an http:// or https:// URL");
    EXPECT_ERROR(CANARY3(",'webhooks':{'timeout':5}"), "routes[0].canary.webhooks.timeout: invalid duration 5");
    EXPECT_ERROR(CANARY3(",'webhooks':{'retries':11}"), "routes[0].canary.webhooks.retries: must be between 0 and 10, got 11");
    EXPECT_ERROR(CANARY3(",'webhooks':{'confirm':'http://x'}"),
                 "routes[0].canary.webhooks.confirm: unknown key");
    EXPECT_ERROR(CANARY3(",'mirror_iteration':1"),
                 "routes[0].canary.mirror_iteration: unknown key (did you mean \"mirror_iterations\"?)");
}

/* POST /v1/routes/NAME/canary bodies: keys override the route's policy. */
static void test_canary_overrides(void)
{
    veer_config_errors_t errs = {0};
    veer_config_t *cfg = parse_q(CANARY3(",'mode':'ab','iterations':4,'match':{'header':'x-a','equals':'1'},"
                                         "'webhooks':{'promoted':'http://cd/p','phase_change':['http://cd/ph']}"),
                                 &errs);
    print_errors(&errs);
    CHECK(cfg != NULL);
    if (!cfg)
        return;
    const veer_canary_config_t *base = cfg->routes[0].canary;

    cJSON *body = cJSON_Parse("{\"step_weight\":20,\"interval\":\"5s\",\"canary\":\"canary\"}");
    veer_canary_config_t *c = veer_config_canary_parse(cfg, base, body, &errs);
    print_errors(&errs);
    CHECK(c != NULL);
    if (c) {
        CHECK(c->step_weight == 20 && c->interval_ms == 5000 && c->canary == 2 && c->stable == 0);
        CHECK(c->mode == VEER_CANARY_AB && c->iterations == 4);
        CHECK(c->match && c->match->cluster == 2 && strcmp(c->match->name, "x-a") == 0); /* follows the canary */
        CHECK_STR(c->webhook_promoted, "http://cd/p");
        CHECK(c->webhook_phase_change_count == 1 && c->match != base->match);
    }
    veer_config_canary_free(c);
    cJSON_Delete(body);

    /* switching mode drops the inherited match; the webhooks merge key by key */
    body = cJSON_Parse("{\"mode\":\"progressive\",\"webhooks\":{\"promoted\":null,\"retries\":1}}");
    c = veer_config_canary_parse(cfg, base, body, &errs);
    print_errors(&errs);
    CHECK(c && c->match == NULL && c->mode == VEER_CANARY_PROGRESSIVE);
    CHECK(c && c->webhook_promoted == NULL && c->webhook_phase_change_count == 1 && c->webhook_retries == 1);
    veer_config_canary_free(c);
    cJSON_Delete(body);

    /* no body: the base itself, copied */
    c = veer_config_canary_parse(cfg, base, NULL, &errs);
    CHECK(c && c->iterations == 4 && c->match && c->match != base->match);
    veer_config_canary_free(c);
    CHECK(errs.count == 0);

    /* errors: top-level paths, nothing returned */
    body = cJSON_Parse("{\"step_weight\":0,\"canary\":\"nope\",\"stpe\":1}");
    c = veer_config_canary_parse(cfg, base, body, &errs);
    CHECK(c == NULL);
    CHECK(has_error(&errs, "step_weight: expected a positive integer, got 0"));
    CHECK(has_error(&errs, "canary: unknown cluster \"nope\""));
    CHECK(has_error(&errs, "stpe: unknown key"));
    veer_config_errors_clear(&errs);
    cJSON_Delete(body);
    body = cJSON_Parse("[1]");
    CHECK(veer_config_canary_parse(cfg, base, body, &errs) == NULL);
    CHECK(has_error(&errs, "expected a JSON object of canary policy keys, got an array"));
    veer_config_errors_clear(&errs);
    cJSON_Delete(body);
    body = cJSON_Parse("{\"stable\":\"canary\",\"canary\":\"canary\"}");
    CHECK(veer_config_canary_parse(cfg, base, body, &errs) == NULL);
    CHECK(has_error(&errs, "canary: must differ from stable (\"canary\")"));
    veer_config_errors_clear(&errs);
    cJSON_Delete(body);

    /* no base: stable and canary are required, the rest defaults */
    CHECK(veer_config_canary_parse(cfg, NULL, NULL, &errs) == NULL);
    CHECK(has_error(&errs, "stable: required key is missing") && has_error(&errs, "canary: required key is missing"));
    veer_config_errors_clear(&errs);
    body = cJSON_Parse("{\"stable\":\"blue\",\"canary\":\"green\"}");
    c = veer_config_canary_parse(cfg, NULL, body, &errs);
    CHECK(c && c->threshold == 5 && c->step_weight == 10 && c->max_inconclusive == 3);
    veer_config_canary_free(c);
    cJSON_Delete(body);
    CHECK(veer_config_canary_parse(NULL, base, NULL, NULL) == NULL);
    veer_config_canary_free(NULL);

#ifndef VEER_TEST_NO_MALLOC_HOOKS
    /* every allocation failure of a merge: NULL with an error, no leak */
    body = cJSON_Parse("{\"step_weights\":[5,50],\"webhooks\":{\"phase_change\":[\"http://a\",\"http://b\"]}}");
    long budget = 0;
    for (; body && budget < 1000; budget++) {
        long live_before = live_allocs;
        alloc_budget = budget;
        c = veer_config_canary_parse(cfg, base, body, &errs);
        alloc_budget = -1;
        CHECK(c != NULL || errs.count + errs.dropped > 0);
        bool done = c != NULL;
        veer_config_canary_free(c);
        veer_config_errors_clear(&errs);
        CHECK(live_allocs == live_before);
        if (done)
            break;
    }
    CHECK(budget > 5 && budget < 1000);
    cJSON_Delete(body);
#endif
    veer_config_free(cfg);
}

/* clusters.NAME.failover: another cluster's index, -1 when left out; itself
 * and unknown names are errors at the key's path. */
static void test_failover(void)
{
    veer_config_errors_t errs = {0};
    veer_config_t *cfg = parse_q("{" LISTENERS ",'clusters':{'local':{'endpoints':['127.0.0.1:8081']},"
                                 "'canary':{'endpoints':['127.0.0.1:8082'],'failover':'local'}}," ROUTES "}",
                                 &errs);
    print_errors(&errs);
    CHECK(cfg != NULL);
    if (cfg) {
        CHECK(cfg->clusters[0].failover == -1);
        CHECK(cfg->clusters[1].failover == 0);
    }
    veer_config_free(cfg);
    EXPECT_ERROR("{" LISTENERS ",'clusters':{'local':{'endpoints':['127.0.0.1:8081'],'failover':'local'}}," ROUTES
                 "}",
                 "clusters.local.failover: a cluster cannot fail over to itself");
    EXPECT_ERROR("{" LISTENERS ",'clusters':{'local':{'endpoints':['127.0.0.1:8081'],'failover':'gren'}}," ROUTES
                 "}",
                 "clusters.local.failover: unknown cluster \"gren\"");
    EXPECT_ERROR("{" LISTENERS ",'clusters':{'local':{'endpoints':['127.0.0.1:8081'],'failover':3}}," ROUTES "}",
                 "clusters.local.failover: expected a cluster name");
}

/* Issue 4's resilience knobs: defaults when left out. */
static void test_resilience_defaults(void)
{
    veer_config_errors_t errs = {0};
    veer_config_t *cfg = parse_q("{" LISTENERS ",'clusters':{'local':{'endpoints':['127.0.0.1:8081'],"
                                 "'health_check':{'path':'/h'},'outlier_detection':{}}}," ROUTES "}",
                                 &errs);
    print_errors(&errs);
    CHECK(cfg != NULL);
    if (!cfg)
        return;
    const veer_cluster_config_t *c = &cfg->clusters[0];
    CHECK(c->panic_threshold == 50);
    const veer_health_check_config_t *hc = c->health_check;
    CHECK(hc && hc->jitter_ms == 500 && hc->require_initial_pass);
    CHECK(hc && hc->expected_status_count == 1 && hc->expected_statuses[0].lo == 200 &&
          hc->expected_statuses[0].hi == 399);
    const veer_outlier_config_t *od = c->outlier_detection;
    CHECK(od != NULL);
    if (od) {
        CHECK(od->consecutive_local_origin_failure == 5);
        CHECK(od->enforcing_consecutive_5xx == 100 && od->enforcing_consecutive_gateway_failure == 100);
        CHECK(od->enforcing_consecutive_local_origin_failure == 100 && od->enforcing_success_rate == 100);
        CHECK(od->enforcing_failure_percentage == 0 && od->failure_percentage_threshold == 85);
        CHECK(od->failure_percentage_minimum_hosts == 5 && od->failure_percentage_request_volume == 50);
        CHECK(od->latency_p99_max_ms == 0 && od->latency_request_volume == 100);
        CHECK(od->max_ejection_time_jitter_ms == 0 && od->successful_active_health_check_uneject_host);
    }
    const veer_retry_config_t *rt = &cfg->routes[0].retry;
    CHECK(rt->attempts == 1 && rt->budget_percent == 20 && rt->min_retry_concurrency == 3);
    CHECK(rt->backoff_base_ms == 25 && rt->backoff_max_ms == 250 && rt->max_body_bytes == 65536);
    CHECK(rt->retriable_status_count == 0);
    CHECK(rt->on == (VEER_RETRY_ON_CONNECT_FAILURE | VEER_RETRY_ON_REFUSED_STREAM));
    veer_config_free(cfg);
    veer_config_errors_clear(&errs);
}

/* Issue 4's resilience knobs: every one read as written. */
static void test_resilience_values(void)
{
    veer_config_errors_t errs = {0};
    veer_config_t *cfg = parse_q(
        "{" LISTENERS ",'clusters':{'local':{'endpoints':['127.0.0.1:8081'],'panic_threshold':0,"
        "'health_check':{'path':'/h','interval':'10s','jitter':'2s','expected_statuses':[200,'202-204','300'],"
        "'require_initial_pass':false},"
        "'outlier_detection':{'consecutive_local_origin_failure':2,'enforcing_consecutive_5xx':50,"
        "'enforcing_consecutive_gateway_failure':0,'enforcing_consecutive_local_origin_failure':10,"
        "'enforcing_success_rate':20,'enforcing_failure_percentage':100,'failure_percentage_threshold':70,"
        "'failure_percentage_minimum_hosts':1,'failure_percentage_request_volume':10,'latency_p99_max':'750ms',"
        "'latency_request_volume':20,'max_ejection_time_jitter':'3s',"
        "'successful_active_health_check_uneject_host':false}}},"
        "'routes':[{'name':'r','split':[{'cluster':'local','weight':1}],"
        "'retry':{'attempts':3,'on':['retriable-status-codes','timeout'],'retriable_status_codes':[409,'500-502'],"
        "'min_retry_concurrency':0,'backoff_base':'10ms','backoff_max':'1s','max_body_bytes':0}}]}",
        &errs);
    print_errors(&errs);
    CHECK(cfg != NULL);
    if (!cfg)
        return;
    const veer_cluster_config_t *c = &cfg->clusters[0];
    CHECK(c->panic_threshold == 0);
    const veer_health_check_config_t *hc = c->health_check;
    CHECK(hc && hc->jitter_ms == 2000 && !hc->require_initial_pass && hc->expected_status_count == 3);
    if (hc) {
        CHECK(hc->expected_statuses[0].lo == 200 && hc->expected_statuses[0].hi == 200);
        CHECK(hc->expected_statuses[1].lo == 202 && hc->expected_statuses[1].hi == 204);
        CHECK(hc->expected_statuses[2].lo == 300 && hc->expected_statuses[2].hi == 300);
    }
    const veer_outlier_config_t *od = c->outlier_detection;
    CHECK(od != NULL);
    if (od) {
        CHECK(od->consecutive_local_origin_failure == 2 && od->enforcing_consecutive_5xx == 50);
        CHECK(od->enforcing_consecutive_gateway_failure == 0 && od->enforcing_consecutive_local_origin_failure == 10);
        CHECK(od->enforcing_success_rate == 20 && od->enforcing_failure_percentage == 100);
        CHECK(od->failure_percentage_threshold == 70 && od->failure_percentage_minimum_hosts == 1);
        CHECK(od->failure_percentage_request_volume == 10 && od->latency_p99_max_ms == 750);
        CHECK(od->latency_request_volume == 20 && od->max_ejection_time_jitter_ms == 3000);
        CHECK(!od->successful_active_health_check_uneject_host);
    }
    const veer_retry_config_t *rt = &cfg->routes[0].retry;
    CHECK(rt->on == (VEER_RETRY_ON_STATUS_CODES | VEER_RETRY_ON_TIMEOUT));
    CHECK(rt->retriable_status_count == 2 && rt->retriable_status_codes[0].lo == 409 &&
          rt->retriable_status_codes[0].hi == 409);
    CHECK(rt->retriable_status_codes[1].lo == 500 && rt->retriable_status_codes[1].hi == 502);
    CHECK(rt->min_retry_concurrency == 0 && rt->backoff_base_ms == 10 && rt->backoff_max_ms == 1000);
    CHECK(rt->max_body_bytes == 0);
    veer_config_free(cfg);
    veer_config_errors_clear(&errs);
}

/* Issue 4's resilience knobs: each error names its JSON path. */
static void test_resilience_errors(void)
{
    EXPECT_ERROR(WITH_CLUSTER("'panic_threshold':101"),
                 "clusters.local.panic_threshold: must be between 0 and 100, got 101");
    EXPECT_ERROR(WITH_CLUSTER("'health_check':{'path':'/h','interval':'5s','jitter':'5s'}"),
                 "clusters.local.health_check.jitter: must be shorter than interval (5s)");
    EXPECT_ERROR(WITH_CLUSTER("'health_check':{'path':'/h','expected_statuses':[200,600]}"),
                 "clusters.local.health_check.expected_statuses[1]: expected a status 100..599 or a range such "
                 "as \"200-399\", got 600");
    EXPECT_ERROR(WITH_CLUSTER("'health_check':{'path':'/h','expected_statuses':['299-200','2xx','200-','20',"
                              "'200-2990',' 200']}"),
                 "expected_statuses[0]: expected a status", "expected_statuses[1]: expected a status",
                 "expected_statuses[2]: expected a status", "expected_statuses[3]: expected a status",
                 "expected_statuses[4]: expected a status", "expected_statuses[5]: expected a status");
    EXPECT_ERROR(WITH_CLUSTER("'health_check':{'path':'/h','expected_statuses':[]}"),
                 "clusters.local.health_check.expected_statuses: expected a non-empty array, got an empty array");
    EXPECT_ERROR(WITH_CLUSTER("'health_check':{'path':'/h','expected_statuses':[200,201,202,203,204,205,206,207,"
                              "208,209,210,211,212,213,214,215,216]}"),
                 "clusters.local.health_check.expected_statuses[16]: too many entries (at most 16)");
    EXPECT_ERROR(WITH_CLUSTER("'health_check':{'path':'/h','require_initial_pass':1}"),
                 "clusters.local.health_check.require_initial_pass: expected true or false, got 1");
    EXPECT_ERROR(WITH_CLUSTER("'outlier_detection':{'enforcing_success_rate':101}"),
                 "clusters.local.outlier_detection.enforcing_success_rate: must be between 0 and 100, got 101");
    EXPECT_ERROR(WITH_CLUSTER("'outlier_detection':{'latency_p99_max':5}"),
                 "clusters.local.outlier_detection.latency_p99_max: invalid duration 5");
    EXPECT_ERROR(WITH_CLUSTER("'outlier_detection':{'failure_percentage_request_volume':0}"),
                 "clusters.local.outlier_detection.failure_percentage_request_volume: expected a positive integer");
    EXPECT_ERROR(WITH_CLUSTER("'outlier_detection':{'enforcing_latency':100}"),
                 "clusters.local.outlier_detection.enforcing_latency: unknown key");
    EXPECT_ERROR(WITH_CLUSTER("'outlier_detection':{'max_ejection_time_jitter':'-1s'}"),
                 "clusters.local.outlier_detection.max_ejection_time_jitter: invalid duration");
    EXPECT_ERROR(WITH_ROUTE("'retry':{'on':['retriable-status-codes']}"),
                 "routes[0].retry.retriable_status_codes: required when \"on\" lists \"retriable-status-codes\"");
    EXPECT_ERROR(WITH_ROUTE("'retry':{'retriable_status_codes':[409]}"),
                 "routes[0].retry.retriable_status_codes: has no effect unless \"on\" lists "
                 "\"retriable-status-codes\"");
    EXPECT_ERROR(WITH_ROUTE("'retry':{'backoff_max':'10ms'}"),
                 "routes[0].retry.backoff_max: must not be shorter than backoff_base (25ms)");
    EXPECT_ERROR(WITH_ROUTE("'retry':{'backoff_base':'0s'}"),
                 "routes[0].retry.backoff_base: must be at least 1ms, got \"0s\"");
    EXPECT_ERROR(WITH_ROUTE("'retry':{'max_body_bytes':-1}"),
                 "routes[0].retry.max_body_bytes: expected a non-negative integer, got -1");
    EXPECT_ERROR(WITH_ROUTE("'retry':{'min_retry_concurrency':'3'}"),
                 "routes[0].retry.min_retry_concurrency: expected a non-negative integer, got \"3\"");
    EXPECT_ERROR(WITH_ROUTE("'retry':{'on':['retriable-status']}"),
                 "routes[0].retry.on[0]: unknown retry condition \"retriable-status\"", "retriable-status-codes)");
}

/* HTTP/2 upstream keys (h2up.c) and the route's failure_grpc_status. */
static void test_h2_upstream_keys(void)
{
    veer_config_errors_t errs = {0};
    veer_config_t *cfg = parse_q(WITH_ROUTE("'timeout':'1s'"), &errs);
    CHECK(cfg != NULL);
    if (cfg) {
        CHECK(cfg->clusters[0].max_streams_per_connection == 100);
        CHECK(cfg->clusters[0].connections_per_endpoint == 1);
        CHECK(cfg->routes[0].failure_grpc_status == ~1u); /* every code but OK */
        veer_config_free(cfg);
    }
    cfg = parse_q("{" LISTENERS ",'clusters':{'local':{'endpoints':['127.0.0.1:8081'],'protocol':'h2c',"
                  "'max_streams_per_connection':10,'connections_per_endpoint':4}},'routes':[{'name':'r',"
                  "'split':[{'cluster':'local','weight':1}],'failure_grpc_status':[4,14,200]}]}", &errs);
    CHECK(cfg != NULL);
    if (cfg) {
        CHECK(cfg->clusters[0].max_streams_per_connection == 10);
        CHECK(cfg->clusters[0].connections_per_endpoint == 4);
        CHECK(cfg->routes[0].failure_grpc_status == ((1u << 4) | (1u << 14) | (1u << 31)));
        veer_config_free(cfg);
    }
    print_errors(&errs);
    veer_config_errors_clear(&errs);
    cfg = parse_q(WITH_ROUTE("'failure_grpc_status':[]"), &errs);
    CHECK(cfg != NULL && cfg->routes[0].failure_grpc_status == 0);
    veer_config_free(cfg);
    EXPECT_ERROR(WITH_CLUSTER("'max_streams_per_connection':0"),
                 "clusters.local.max_streams_per_connection: expected a positive integer, got 0");
    EXPECT_ERROR(WITH_CLUSTER("'connections_per_endpoint':2000"),
                 "clusters.local.connections_per_endpoint: must be between 1 and 1024, got 2000");
    EXPECT_ERROR(WITH_ROUTE("'failure_grpc_status':[1,256,'x']"),
                 "routes[0].failure_grpc_status[1]: expected a gRPC status code 0..255, got 256",
                 "routes[0].failure_grpc_status[2]: expected a gRPC status code 0..255, got \"x\"");
    EXPECT_ERROR(WITH_ROUTE("'failure_grpc_status':14"), "routes[0].failure_grpc_status: expected an array");
}

/* peers.leader: required with peers, true/false or the leading host name. */
static void test_peers_leader(void)
{
    veer_config_errors_t errs = {0};
    veer_config_t *cfg = parse_q(MINIMAL, &errs);
    CHECK(cfg != NULL && veer_config_leads(cfg, "any-host")); /* a single replica leads */
    veer_config_free(cfg);
    cfg = parse_q(WITH_TOP("'peers':null"), &errs);
    CHECK(cfg != NULL && veer_config_leads(cfg, NULL));
    veer_config_free(cfg);
    cfg = parse_q(WITH_TOP("'peers':{'admins':['10.0.0.2:9901'],'leader':true}"), &errs);
    CHECK(cfg != NULL && veer_config_leads(cfg, "x") && cfg->peers.leader_host == NULL);
    veer_config_free(cfg);
    cfg = parse_q(WITH_TOP("'peers':{'admins':['10.0.0.2:9901'],'leader':false}"), &errs);
    CHECK(cfg != NULL && !veer_config_leads(cfg, "x"));
    veer_config_free(cfg);
    cfg = parse_q(WITH_TOP("'peers':{'admins':['veer-admin.ns.svc:9901'],'leader':'veer-ingress-0'}"), &errs);
    CHECK(cfg != NULL && cfg->peers.leader_host != NULL);
    if (cfg) {
        CHECK(veer_config_leads(cfg, "veer-ingress-0"));
        CHECK(!veer_config_leads(cfg, "veer-ingress-1"));
        CHECK(!veer_config_leads(cfg, "veer-ingress-0.veer-admin")); /* the whole name, not a prefix */
        CHECK(!veer_config_leads(cfg, ""));
        CHECK(!veer_config_leads(cfg, NULL));
    }
    veer_config_free(cfg);
    print_errors(&errs);
    veer_config_errors_clear(&errs);

    EXPECT_ERROR(WITH_TOP("'peers':{'admins':['10.0.0.2:9901']}"),
                 "peers.leader: required: true on the replica that runs the canary controller, false on the others, "
                 "or the leader's host name");
    EXPECT_ERROR(WITH_TOP("'peers':{'admins':['10.0.0.2:9901'],'leader':1}"),
                 "peers.leader: expected true, false or the leader's host name, got 1");
    EXPECT_ERROR(WITH_TOP("'peers':{'admins':['10.0.0.2:9901'],'leader':null}"),
                 "peers.leader: expected true, false or the leader's host name, got null");
    EXPECT_ERROR(WITH_TOP("'peers':{'admins':['10.0.0.2:9901'],'leader':['veer-0']}"),
                 "peers.leader: expected true, false or the leader's host name");
    static const char *const bad_hosts[] = {"", "veer 0", "veer/0", "-veer", "veer-", ".veer", "veer.", "veer:0",
                                            "v\u00e9er"};
    for (size_t i = 0; i < sizeof bad_hosts / sizeof bad_hosts[0]; i++) {
        char json[512];
        snprintf(json, sizeof json, WITH_TOP("'peers':{'admins':['10.0.0.2:9901'],'leader':'%s'}"), bad_hosts[i]);
        EXPECT_ERROR(json, "peers.leader: expected a host name (1-253 of letters, digits, '-', '.', '_'), got");
    }
    char json[1024];
    char longest[254];
    memset(longest, 'h', 253);
    longest[253] = '\0';
    snprintf(json, sizeof json, WITH_TOP("'peers':{'admins':['10.0.0.2:9901'],'leader':'%sh'}"), longest);
    EXPECT_ERROR(json, "peers.leader: expected a host name");
    snprintf(json, sizeof json, WITH_TOP("'peers':{'admins':['10.0.0.2:9901'],'leader':'%s'}"), longest);
    cfg = parse_q(json, &errs);
    CHECK(cfg != NULL && veer_config_leads(cfg, longest));
    veer_config_free(cfg);
    print_errors(&errs);
    veer_config_errors_clear(&errs);
    /* the other peers errors are still reported next to it */
    EXPECT_ERROR(WITH_TOP("'peers':{'admins':['no-port'],'leader':'x y'}"), "peers.admins[0]: expected",
                 "peers.leader: expected a host name");
}

int main(void)
{
    static void (*const tests[])(void) = {
        test_spec_example, test_minimal_defaults, test_block_defaults, test_grpc_health_check, test_unknown_keys, test_wrong_types,
        test_route_errors, test_canary_errors, test_address_errors, test_good_endpoints, test_multiple_errors,
        test_syntax_errors, test_durations, test_sockaddr, test_load, test_out_of_memory,
        test_canary_new_keys, test_canary_new_key_errors, test_canary_overrides,
        test_resilience_defaults, test_resilience_values, test_resilience_errors, test_failover,
        test_h2_upstream_keys, test_peers_leader,
    };
    size_t test_count = sizeof tests / sizeof tests[0];
    for (size_t i = 0; i < test_count; i++)
        tests[i]();
    return check_summary("test_config");
}
