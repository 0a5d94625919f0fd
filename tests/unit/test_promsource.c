/* test_promsource.c - the Prometheus source's pure parts: the PromQL text of
 * each query (labels escaped, window in seconds or milliseconds, names too
 * long refused) and the reading of query answers (a sample, NaN, an empty
 * vector, and the malformed answers that must be errors, not zeros). */
#include "promsource.h"

#include <math.h>
#include <string.h>

#include "check.h"

static void test_promql(void)
{
    char q[512], big[600];
    CHECK(veer_promsource_promql(0, "embed", "green", 60000, q, sizeof q) == 0);
    CHECK_STR(q, "sum(increase(veer_requests_total{route=\"embed\",cluster=\"green\"}[60s]))");
    CHECK(veer_promsource_promql(1, "embed", "blue", 1500, q, sizeof q) == 0);
    CHECK_STR(q, "sum(increase(veer_request_failures_total{route=\"embed\",cluster=\"blue\"}[1500ms]))");
    CHECK(veer_promsource_promql(2, "a\"b\\c", "blue", 1000, q, sizeof q) == 0);
    CHECK_STR(q, "histogram_quantile(0.99, sum by (le) (rate(veer_request_duration_seconds_bucket"
                 "{route=\"a\\\"b\\\\c\",cluster=\"blue\"}[1s])))");
    CHECK(veer_promsource_promql(3, "embed", "blue", 1000, q, sizeof q) == -1);
    CHECK(veer_promsource_promql(0, "embed", "green", 60000, q, 20) == -1);
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    CHECK(veer_promsource_promql(0, big, "green", 1000, q, sizeof q) == -1);
}

static int parse(const char *body, double *v, char *err)
{
    return veer_promsource_parse(body, strlen(body), v, err, 128);
}

static void test_parse(void)
{
    char err[128];
    double v = -1;
    CHECK(parse("{\"status\":\"success\",\"data\":{\"resultType\":\"vector\",\"result\":"
                "[{\"metric\":{},\"value\":[1700000000.1,\"1234.5\"]}]}}", &v, err) == 0);
    CHECK_NEAR(v, 1234.5, 1e-9);
    CHECK(parse("{\"status\":\"success\",\"data\":{\"resultType\":\"vector\",\"result\":"
                "[{\"metric\":{},\"value\":[1700000000.1,\"NaN\"]}]}}", &v, err) == 0);
    CHECK(v == 0);
    CHECK(parse("{\"status\":\"success\",\"data\":{\"resultType\":\"vector\",\"result\":"
                "[{\"metric\":{},\"value\":[1700000000.1,\"+Inf\"]}]}}", &v, err) == 0);
    CHECK(v == 0);
    v = 7;
    CHECK(parse("{\"status\":\"success\",\"data\":{\"resultType\":\"vector\",\"result\":[]}}", &v, err) == 0);
    CHECK(v == 0);
    CHECK(parse("{\"status\":\"error\",\"error\":\"parse error at char 5\"}", &v, err) == -1);
    CHECK_CONTAINS(err, "parse error at char 5");
    CHECK(parse("not json", &v, err) == -1);
    CHECK_CONTAINS(err, "not JSON");
    CHECK(parse("{\"status\":\"success\",\"data\":{\"resultType\":\"matrix\",\"result\":[]}}", &v, err) == -1);
    CHECK_CONTAINS(err, "vector");
    CHECK(parse("{\"status\":\"success\",\"data\":{\"resultType\":\"vector\",\"result\":"
                "[{\"metric\":{},\"value\":[1700000000.1,12]}]}}", &v, err) == -1);
    CHECK(parse("{\"status\":\"success\",\"data\":{\"resultType\":\"vector\",\"result\":"
                "[{\"metric\":{},\"value\":[1700000000.1,\"12abc\"]}]}}", &v, err) == -1);
    CHECK_CONTAINS(err, "value[1]");
}

int main(void)
{
    test_promql();
    test_parse();
    return check_summary("test_promsource");
}
