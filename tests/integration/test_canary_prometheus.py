"""Canary analysis read from Prometheus (routes[].canary.source.prometheus):
a fake Prometheus query API on loopback answers canned vectors that each test
sets, and records every query it gets. Good numbers promote a run through
which no request ever flowed (so they came from Prometheus); a high canary
failure rate rolls it back; a server answering 500 or not at all makes the
intervals inconclusive and pauses the run with a reason naming prometheus;
the queries carry the route, both clusters and the window; bad source
blocks are refused with their JSON path."""

import json
import os
import re
import sys
import threading
import time
import unittest
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import SLOW, Veer, base_config, wait_until  # noqa: E402

PODS = {}
POD_NAMES = ("blue-1", "green-1")


def setUpModule():
    harness.start_pods(PODS, POD_NAMES)


class FakePrometheus:
    """GET /api/v1/query: answers from self.values[(cluster, what)] where what
    is requests, failures or p99 (seconds); mode "500" answers HTTP 500,
    "hang" never answers within the test's timeout."""

    def __init__(self):
        self.lock = threading.Lock()
        self.queries = []
        self.mode = "ok"
        self.values = {}
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                url = urllib.parse.urlsplit(self.path)
                q = urllib.parse.parse_qs(url.query).get("query", [""])[0]
                with owner.lock:
                    owner.queries.append((url.path, q))
                    mode = owner.mode
                    values = dict(owner.values)
                if mode == "hang":
                    time.sleep(2)
                if mode == "500":
                    body = b'{"status":"error","errorType":"internal","error":"boom"}'
                    self.send_response(500)
                else:
                    body = json.dumps(owner.answer(q, values)).encode()
                    self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except OSError:
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @staticmethod
    def answer(q, values):
        what = "p99" if "histogram_quantile" in q else "failures" if "failures" in q else "requests"
        m = re.search(r'cluster="([^"]*)"', q)
        v = values.get((m.group(1) if m else "", what))
        result = [] if v is None else [{"metric": {}, "value": [time.time(), v]}]
        return {"status": "success", "data": {"resultType": "vector", "result": result}}

    def set(self, mode="ok", **values):
        with self.lock:
            self.mode = mode
            self.values = {tuple(k.split("_", 1)): v for k, v in values.items()}

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def config():
    clusters = {"blue": [PODS["blue-1"].addr], "green": [PODS["green-1"].addr]}
    routes = [{"name": "embed", "match": {"path_prefix": "/api/v1/embed"},
               "split": [{"cluster": "blue", "weight": 100}, {"cluster": "green", "weight": 0}]}]
    return base_config(clusters, routes)


def policy(prom, **over):
    p = {"stable": "blue", "canary": "green", "interval": "300ms", "step_weight": 25, "max_weight": 50,
         "min_requests": 50, "threshold": 2, "success_rate_min": 95, "p99_max": "300ms",
         "compare_to_stable": True, "max_inconclusive": 2,
         "source": {"prometheus": prom.url, "query_window": "1m", "timeout": "500ms"}}
    p.update(over)
    return p


GOOD = {"green_requests": "1000", "green_failures": "1", "green_p99": "0.02",
        "blue_requests": "5000", "blue_failures": "5", "blue_p99": "0.021"}


class CanaryPrometheusTest(unittest.TestCase):
    def setUp(self):
        self.prom = FakePrometheus()
        self.v = Veer(config())
        for p in PODS.values():
            p.reset_stats()

    def tearDown(self):
        self.v.stop()
        self.prom.stop()

    def canary(self):
        st, js = self.v.admin("GET", "/v1/routes/embed/canary")
        self.assertEqual(st, 200, js)
        return js

    def wait_phase(self, phase, timeout):
        box = {}

        def done():
            box["run"] = self.canary()
            return box["run"]["phase"] == phase
        try:
            wait_until(done, timeout * SLOW, interval=0.05, what="phase " + phase)
        except AssertionError:
            raise AssertionError("phase never reached %s; last run: %s" % (phase, box.get("run")))
        return box["run"]

    def test_good_numbers_promote_without_local_traffic(self):
        self.prom.set(**GOOD)
        st, js = self.v.admin("POST", "/v1/routes/embed/canary", policy(self.prom))
        self.assertEqual(st, 200, js)
        self.assertEqual(js["source"]["kind"], "prometheus")
        run = self.wait_phase("succeeded", 10)
        self.assertEqual(self.v.weights("embed"), {"blue": 0, "green": 100})
        self.assertEqual(run["failed_checks"], 0)
        self.assertGreaterEqual(run["checks_passed"], 2)
        # the analysis used Prometheus' numbers: veer itself served nothing
        a = run["last_analysis"]
        self.assertEqual(a["canary"]["requests"], 1000)
        self.assertEqual(a["canary"]["failures"], 1)
        self.assertEqual(a["stable"]["requests"], 5000)
        self.assertEqual(PODS["green-1"].stats().get("requests", 0), 0)
        src = run["source"]
        self.assertEqual(src["prometheus"], self.prom.url)
        self.assertIsNone(src["last_error"])
        self.assertGreaterEqual(src["queries"], 2)
        self.assertEqual(src["errors"], 0)
        # six queries per analysis, on the query API, naming route, clusters and window
        with self.prom.lock:
            queries = list(self.prom.queries)
        self.assertGreaterEqual(len(queries), 12)
        self.assertEqual(len(queries) % 6, 0)
        self.assertTrue(all(path == "/api/v1/query" for path, _ in queries))
        texts = [q for _, q in queries[:6]]
        self.assertIn('sum(increase(veer_requests_total{route="embed",cluster="green"}[60s]))', texts)
        self.assertIn('sum(increase(veer_request_failures_total{route="embed",cluster="blue"}[60s]))', texts)
        self.assertIn('histogram_quantile(0.99, sum by (le) (rate(veer_request_duration_seconds_bucket'
                      '{route="embed",cluster="green"}[60s])))', texts)
        self.assertEqual(sum('cluster="green"' in q for q in texts), 3)
        self.assertEqual(sum('cluster="blue"' in q for q in texts), 3)

    def test_high_canary_failure_rate_rolls_back(self):
        bad = dict(GOOD, green_failures="200")
        self.prom.set(**bad)
        st, js = self.v.admin("POST", "/v1/routes/embed/canary", policy(self.prom, max_weight=90, step_weight=10))
        self.assertEqual(st, 200, js)
        run = self.wait_phase("rolled_back", 10)
        self.assertEqual(self.v.weights("embed"), {"blue": 100, "green": 0})
        self.assertEqual(run["failed_checks"], 2)
        self.assertEqual(run["last_analysis"]["canary"]["failures"], 200)
        self.assertIn("success rate 80.00%", run["last_analysis"]["detail"])

    def test_empty_results_are_inconclusive_not_failed(self):
        self.prom.set(green_requests="NaN", blue_requests="NaN")
        st, js = self.v.admin("POST", "/v1/routes/embed/canary", policy(self.prom))
        self.assertEqual(st, 200, js)
        run = self.wait_phase("paused", 10)
        self.assertEqual(run["weight"], 25)
        self.assertEqual(run["failed_checks"], 0)
        self.assertIn("had 0 requests", run["reason"])
        self.assertIsNone(run["source"]["last_error"])

    def test_http_500_is_inconclusive_and_pauses(self):
        self.prom.set(mode="500", **GOOD)
        st, js = self.v.admin("POST", "/v1/routes/embed/canary", policy(self.prom))
        self.assertEqual(st, 200, js)
        run = self.wait_phase("paused", 10)
        self.assertEqual(run["weight"], 25)  # held: neither a failure nor a pass
        self.assertEqual(run["failed_checks"], 0)
        self.assertEqual(run["checks_passed"], 0)
        self.assertIn("prometheus: HTTP 500", run["reason"])
        self.assertIn("2 inconclusive analyses in a row", run["reason"])
        self.assertIn("HTTP 500", run["source"]["last_error"])
        self.assertIn("prometheus", run["last_analysis"]["detail"])
        self.assertEqual(self.v.weights("embed"), {"blue": 75, "green": 25})
        # Prometheus back: resume goes on and promotes
        self.prom.set(**GOOD)
        st, js = self.v.admin("POST", "/v1/routes/embed/canary/resume")
        self.assertEqual(st, 200, js)
        self.wait_phase("succeeded", 10)

    def test_timeout_is_inconclusive_and_pauses(self):
        self.prom.set(mode="hang", **GOOD)
        st, js = self.v.admin("POST", "/v1/routes/embed/canary", policy(self.prom))
        self.assertEqual(st, 200, js)
        t0 = time.time()
        # while a set hangs, veer's admin (the same event loop) still answers at once
        wait_until(lambda: self.canary()["source"]["in_flight"], 5 * SLOW, what="a query set in flight")
        t1 = time.time()
        self.canary()
        self.assertLess(time.time() - t1, 0.4 * SLOW)
        run = self.wait_phase("paused", 10)
        self.assertIn("prometheus: no answer within", run["reason"])
        self.assertEqual(run["failed_checks"], 0)
        self.assertEqual(run["weight"], 25)
        # two intervals of 300 ms, each with a 500 ms deadline
        self.assertGreater(time.time() - t0, 1.0)
        self.assertGreaterEqual(run["source"]["last_query_ms"], 450)
        # at most one set in flight per route: two analyses asked six queries each
        with self.prom.lock:
            self.assertEqual(len(self.prom.queries), 12)

    def test_bad_source_blocks_are_refused_with_their_path(self):
        cases = [({"prometheus": "https://127.0.0.1:9090"}, "source.prometheus"),
                 ({"prometheus": "http://127.0.0.1:9090", "query_window": "10ms"}, "source.query_window"),
                 ({"prometheus": "http://127.0.0.1:9090", "timeout": 2}, "source.timeout"),
                 ({"query_window": "1m"}, "source.prometheus"),
                 ({"prometheus": "http://x", "step": "1s"}, "source")]
        for source, path in cases:
            st, js = self.v.admin("POST", "/v1/routes/embed/canary", policy(self.prom, source=source))
            self.assertEqual(st, 400, (source, js))
            self.assertIn(path, js["error"], source)
        self.assertEqual(self.canary()["phase"], "idle")


if __name__ == "__main__":
    unittest.main()
