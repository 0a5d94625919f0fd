"""GET /metrics and GET /v1/stats against traffic with known outcomes: exact
request and failure counters per route x cluster x class/reason, histogram
counts equal to the requests sent, a P99 read from the `le` buckets close to
the mock pod's latency, the weights gauge following a PUT, `promtool check
metrics` clean on the live text, /v1/stats agreeing with /metrics, and 400
for a bad window."""

import concurrent.futures
import math
import os
import re
import shutil
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import MockPod, Veer, base_config, free_port  # noqa: E402

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
SLOW_MS = 200


def parse_metrics(text):
    """{(name, frozenset(labels)): value} of every sample line."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, "malformed sample line: %r" % line
        labels = frozenset(LABEL.findall(m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())))


def buckets(samples, name, **labels):
    """[(le seconds, cumulative count)] of one histogram, sorted."""
    want = set(labels.items())
    rows = []
    for (n, ls), v in samples.items():
        d = dict(ls)
        if n == name + "_bucket" and want <= set(ls) and len(ls) == len(want) + 1:
            rows.append((math.inf if d["le"] == "+Inf" else float(d["le"]), v))
    return sorted(rows)


def bucket_quantile(rows, q):
    """The geometric middle of the bucket holding the q-quantile (prom.h: within
    4.95% of the true value between 1 ms and 10 s)."""
    total = rows[-1][1]
    rank = q * total
    low = 0.0
    for le, cum in rows:
        if cum >= rank:
            return math.sqrt(low * le) if low > 0 and le != math.inf else le
        low = le
    return math.inf


class MetricsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        harness.require_binaries()
        cls.pod = MockPod("good-1")
        dead = "127.0.0.1:%d" % free_port()  # nothing listens there
        clusters = {"good": [cls.pod.addr], "dead": {"endpoints": [dead], "connect_timeout": "1s"}}
        routes = [
            {"name": "codes", "match": {"path_prefix": "/status/"},
             "split": [{"cluster": "good", "weight": 100}, {"cluster": "dead", "weight": 0}]},
            {"name": "latency", "match": {"path_prefix": "/slow", "headers": [{"name": "x-lat", "prefix": "1"}]},
             "split": [{"cluster": "good", "weight": 100}]},
            {"name": "timeout", "match": {"path_prefix": "/slow"}, "timeout": "200ms",
             "split": [{"cluster": "good", "weight": 100}]},
            {"name": "deadend", "match": {"path_prefix": "/dead"}, "split": [{"cluster": "dead", "weight": 100}]},
        ]
        cls.config = base_config(clusters, routes)
        cls.veer = Veer(cls.config)
        cls.send_traffic()

    @classmethod
    def tearDownClass(cls):
        cls.veer.stop()
        cls.pod.stop()

    @classmethod
    def send_traffic(cls):
        v = cls.veer
        cls.n_ok, cls.n_503, cls.n_lat, cls.n_dead = 20, 7, 100, 3
        for _ in range(cls.n_ok):
            assert v.request("GET", "/status/200")[0] == 200
        for _ in range(cls.n_503):
            assert v.request("GET", "/status/503")[0] == 503
        st = v.request("GET", "/slow?ms=2000")[0]
        assert st == 504, st
        for _ in range(cls.n_dead):
            st = v.request("GET", "/dead")[0]
            assert st in (502, 503), st
        # long enough that veer's own time (ms under ASan) stays well inside 5%
        with concurrent.futures.ThreadPoolExecutor(20) as ex:
            got = list(ex.map(lambda _: v.request("GET", "/slow?ms=%d" % SLOW_MS, headers={"x-lat": "1"})[0],
                              range(cls.n_lat)))
        assert got == [200] * cls.n_lat, got

    def scrape(self):
        st, text = self.veer.admin("GET", "/metrics")
        self.assertEqual(st, 200, text)
        return text

    def test_content_type(self):
        import http.client
        c = http.client.HTTPConnection("127.0.0.1", self.veer.admin_port, timeout=10)
        c.request("GET", "/metrics")
        r = c.getresponse()
        r.read()
        c.close()
        self.assertEqual(r.status, 200)
        self.assertTrue(r.getheader("Content-Type").startswith("text/plain; version=0.0.4"), r.getheader("Content-Type"))

    def test_exact_counters(self):
        s = parse_metrics(self.scrape())
        req = "veer_requests_total"
        fail = "veer_request_failures_total"
        self.assertEqual(value(s, req, route="codes", cluster="good", code_class="2xx"), self.n_ok)
        self.assertEqual(value(s, req, route="codes", cluster="good", code_class="5xx"), self.n_503)
        self.assertEqual(value(s, fail, route="codes", cluster="good", reason="5xx"), self.n_503)
        self.assertEqual(value(s, fail, route="codes", cluster="good", reason="timeout"), 0)
        self.assertEqual(value(s, req, route="timeout", cluster="good", code_class="5xx"), 1)
        self.assertEqual(value(s, fail, route="timeout", cluster="good", reason="timeout"), 1)
        self.assertEqual(value(s, fail, route="timeout", cluster="good", reason="5xx"), 0)
        self.assertEqual(value(s, req, route="deadend", cluster="dead", code_class="5xx"), self.n_dead)
        self.assertEqual(value(s, fail, route="deadend", cluster="dead", reason="connect"), self.n_dead)
        self.assertEqual(value(s, req, route="latency", cluster="good", code_class="2xx"), self.n_lat)
        for reason in ("5xx", "reset", "connect", "timeout", "overflow", "grpc"):
            self.assertEqual(value(s, fail, route="latency", cluster="good", reason=reason), 0, reason)
        dur = "veer_request_duration_seconds"
        for route, cluster, n in (("codes", "good", self.n_ok + self.n_503), ("latency", "good", self.n_lat),
                                  ("timeout", "good", 1), ("deadend", "dead", self.n_dead)):
            self.assertEqual(value(s, dur + "_count", route=route, cluster=cluster), n, route)
            rows = buckets(s, dur, route=route, cluster=cluster)
            self.assertEqual(rows[-1], (math.inf, n), route)
            self.assertEqual([c for _, c in rows], sorted(c for _, c in rows), "buckets must be cumulative")
        # the route timeout fired at 200 ms: its one duration is there, not 2 s
        self.assertLess(value(s, dur + "_sum", route="timeout", cluster="good"), 1.0)
        self.assertGreaterEqual(value(s, dur + "_sum", route="timeout", cluster="good"), 0.2)

    def test_p99_from_buckets(self):
        s = parse_metrics(self.scrape())
        rows = buckets(s, "veer_request_duration_seconds", route="latency", cluster="good")
        p99 = bucket_quantile(rows, 0.99)
        # Every request slept SLOW_MS at the pod: none is faster. How much
        # slower depends on the machine's load, so only a loose upper bound.
        self.assertGreater(p99, 0.95 * SLOW_MS / 1000, "P99 %.5f s from %r" % (p99, rows))
        self.assertLess(p99, 3 * SLOW_MS / 1000, "P99 %.5f s from %r" % (p99, rows))
        # The le ladder resolves P99: veer's own P99 over the same requests
        # (its histogram is exact to 0.4%) lies in the bucket the estimate
        # came from, and that bucket is narrow enough that its geometric
        # middle is within 5% of anything inside it.
        st, js = self.veer.admin("GET", "/v1/stats?window=30s")
        self.assertEqual(st, 200, js)
        row = self.cluster_row(js, "latency", "good")
        exact = row["window"]["p99_ms"] / 1000
        total = rows[-1][1]
        k = next(i for i, (_, c) in enumerate(rows) if c >= 0.99 * total)
        lower, upper = rows[k - 1][0], rows[k][0]
        self.assertTrue(lower * 0.995 <= exact <= upper * 1.005, (exact, lower, upper, row))
        self.assertLess(math.sqrt(upper / lower), 1.05, (lower, upper))

    def test_connect_histogram_and_gauges(self):
        s = parse_metrics(self.scrape())
        # every request to "good" could reuse a pooled connection, so at least one connect was timed
        self.assertGreaterEqual(value(s, "veer_upstream_connect_duration_seconds_count", cluster="good"), 1)
        self.assertEqual(value(s, "veer_weights_generation"), self.veer.generation())
        self.assertEqual(value(s, "veer_endpoint_healthy", cluster="good", endpoint=self.pod.addr), 1)
        self.assertEqual(value(s, "veer_endpoint_ejected", cluster="good", endpoint=self.pod.addr), 0)
        self.assertEqual(value(s, "veer_upstream_rq_active", cluster="good"), 0)
        self.assertGreaterEqual(value(s, "veer_downstream_cx_total", listener="http", protocol="http1"),
                                self.n_ok + self.n_503 + self.n_lat)
        self.assertGreater(value(s, "process_resident_memory_bytes"), 1 << 20)
        self.assertGreater(value(s, "process_open_fds"), 3)
        self.assertGreater(value(s, "process_cpu_seconds_total"), 0)
        self.assertLess(abs(value(s, "process_start_time_seconds") - time.time()), 3600)

    def test_weights_gauge_follows_put(self):
        before = parse_metrics(self.scrape())
        self.assertEqual(value(before, "veer_route_weight", route="codes", cluster="good"), 100)
        self.assertEqual(value(before, "veer_route_weight", route="codes", cluster="dead"), 0)
        st, js = self.veer.set_weights("codes", {"good": 70, "dead": 30})
        self.assertEqual(st, 200, js)
        after = parse_metrics(self.scrape())
        self.assertEqual(value(after, "veer_route_weight", route="codes", cluster="good"), 70)
        self.assertEqual(value(after, "veer_route_weight", route="codes", cluster="dead"), 30)
        self.assertEqual(value(after, "veer_weights_generation"), js["generation"])
        st, js = self.veer.set_weights("codes", {"good": 100, "dead": 0})
        self.assertEqual(st, 200, js)

    def test_promtool_clean(self):
        promtool = shutil.which("promtool")
        self.assertIsNotNone(promtool, "promtool missing: apt-get install -y prometheus")
        text = self.scrape()
        p = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=30)
        report = (p.stdout + p.stderr).decode()
        self.assertEqual(p.returncode, 0, report)
        self.assertEqual(report.strip(), "", report)

    @staticmethod
    def cluster_row(js, route, cluster):
        r = [x for x in js["routes"] if x["name"] == route]
        assert r, js
        c = [x for x in r[0]["clusters"] if x["name"] == cluster]
        assert c, r
        return c[0]

    def test_stats_json_agrees_with_metrics(self):
        st, js = self.veer.admin("GET", "/v1/stats?window=30s")
        self.assertEqual(st, 200, js)
        s = parse_metrics(self.scrape())
        self.assertEqual(js["window_seconds"], 30)
        codes = self.cluster_row(js, "codes", "good")
        self.assertEqual(codes["weight"], 100)
        for view in ("window", "total"):
            self.assertEqual(codes[view]["requests"], self.n_ok + self.n_503, view)
            self.assertEqual(codes[view]["failures"]["5xx"], self.n_503, view)
            self.assertAlmostEqual(codes[view]["success_rate"], 100.0 * self.n_ok / (self.n_ok + self.n_503), 6)
        # younger than the window: the rate is over the seconds veer has run
        self.assertGreater(js["rate_seconds"], 0.5)
        self.assertLess(js["rate_seconds"], 30)
        self.assertAlmostEqual(codes["window"]["rate"], (self.n_ok + self.n_503) / js["rate_seconds"], 6)
        dead = self.cluster_row(js, "deadend", "dead")
        self.assertEqual(dead["window"]["failures"]["connect"], self.n_dead)
        self.assertEqual(dead["window"]["success_rate"], 0)
        lat = self.cluster_row(js, "latency", "good")
        self.assertEqual(lat["window"]["requests"],
                         value(s, "veer_request_duration_seconds_count", route="latency", cluster="good"))
        self.assertEqual(lat["window"]["success_rate"], 100)
        w = lat["window"]
        self.assertTrue(SLOW_MS * 0.95 <= w["p50_ms"] <= w["p90_ms"] <= w["p99_ms"] <= w["p999_ms"], w)
        self.assertLess(w["p99_ms"], SLOW_MS * 1.5, w)
        # a 1 s window right after a pause holds nothing
        time.sleep(2.1)
        st, js = self.veer.admin("GET", "/v1/stats?window=1s")
        self.assertEqual(st, 200, js)
        row = self.cluster_row(js, "latency", "good")
        self.assertEqual(row["window"]["requests"], 0)
        self.assertIsNone(row["window"]["success_rate"])
        self.assertIsNone(row["window"]["p99_ms"])
        self.assertEqual(row["total"]["requests"], self.n_lat)
        eps = [c for c in js["clusters"] if c["name"] == "good"][0]["endpoints"]
        self.assertEqual([e["address"] for e in eps], [self.pod.addr])

    def test_bad_window(self):
        for q in ("window=abc", "window=0s", "window=61s", "window=1h", "window=1500ms", "window=", "foo=1"):
            st, js = self.veer.admin("GET", "/v1/stats?" + q)
            self.assertEqual(st, 400, (q, js))
            self.assertIn("error", js, q)
        st, js = self.veer.admin("GET", "/v1/stats?window=60s")
        self.assertEqual(st, 200, js)
        self.assertEqual(js["window_seconds"], 60)

    def test_reload_refuses_stats_limits(self):
        import copy
        for key, val in (("window", "120s"), ("max_series", 99), ("max_window_bytes", 1048576)):
            cfg = copy.deepcopy(self.config)
            cfg["stats"] = {key: val}
            self.veer.write_config(cfg)
            st, js = self.veer.admin("POST", "/v1/reload")
            self.assertEqual(st, 400, (key, js))
            self.assertIn("stats." + key + ": cannot change on reload", str(js), key)
        # a reload that goes through keeps every series by (route, cluster) name
        cfg = copy.deepcopy(self.config)
        cfg["routes"].insert(0, {"name": "extra", "match": {"path_prefix": "/extra"},
                                 "split": [{"cluster": "good", "weight": 1}]})
        self.veer.write_config(cfg)
        st, js = self.veer.admin("POST", "/v1/reload")
        self.assertEqual(st, 200, js)
        s = parse_metrics(self.scrape())
        self.assertEqual(value(s, "veer_requests_total", route="codes", cluster="good", code_class="2xx"), self.n_ok)
        self.assertEqual(value(s, "veer_route_weight", route="extra", cluster="good"), 1)
        self.assertIsNone(value(s, "veer_requests_total", route="extra", cluster="good", code_class="2xx"))
        self.veer.write_config(self.config)
        st, js = self.veer.admin("POST", "/v1/reload")
        self.assertEqual(st, 200, js)


if __name__ == "__main__":
    unittest.main()
