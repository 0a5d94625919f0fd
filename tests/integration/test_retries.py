"""Retries on the request path: a 503 or a reset first attempt is retried on
the other endpoint (x-veer-attempts: 2) and the failed attempt still reaches
the pod's counters and veer's own success rate; a POST with a small body is replayed, one over
retry.max_body_bytes is not; a zero budget stops retries; per_try_timeout
moves a slow first attempt to the other pod, or answers 504 at its time."""

import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import SLOW, Veer, base_config  # noqa: E402


def setUpModule():
    harness.require_binaries()


class RetryTest(unittest.TestCase):
    def setUp(self):
        self.bad, self.good = harness.pods_for_test(self, "blue-1", "blue-2")

    def veer(self, retry, endpoints=None, protocol="http1"):
        eps = endpoints or [self.bad.addr, self.good.addr]
        cfg = base_config({"blue": {"endpoints": eps, "lb": "round_robin", "protocol": protocol}},
                          [{"name": "all", "match": {"path_prefix": "/"}, "retry": retry,
                            "split": [{"cluster": "blue", "weight": 100}]}], workers=1)
        return Veer(cfg)

    def test_503_retried_on_other_endpoint(self):
        veer = self.veer({"attempts": 2, "on": ["gateway-error"], "backoff_base": "5ms"})
        self.bad.fault(error_rate=1.0)
        attempts = []
        for _ in range(10):
            st, h, _ = veer.request("GET", "/status/200")
            self.assertEqual((st, h.get("x-pod")), (200, "blue-2"))
            attempts.append(h.get("x-veer-attempts"))
        self.assertIn("2", attempts)
        self.assertTrue(set(attempts) <= {"2", None}, attempts)
        # the failed first attempts are not hidden from the bad pod's counters
        self.assertEqual(self.bad.stats()["errors_injected"], attempts.count("2"))
        # nor from veer's own success rate (what the canary controller reads)
        st, text = veer.admin("GET", "/metrics")
        self.assertEqual(st, 200)
        retried = attempts.count("2")
        for line in ('veer_requests_total{route="all",cluster="blue",code_class="2xx"} 10',
                     'veer_requests_total{route="all",cluster="blue",code_class="5xx"} %d' % retried,
                     'veer_request_failures_total{route="all",cluster="blue",reason="5xx"} %d' % retried):
            self.assertIn(line + "\n", text)
        st, js = veer.admin("GET", "/v1/stats?window=30s")
        row = [c for r in js["routes"] if r["name"] == "all" for c in r["clusters"] if c["name"] == "blue"][0]
        self.assertAlmostEqual(row["total"]["success_rate"], 100.0 * 10 / (10 + retried), places=3)

    def test_h2c_503_and_post_retried(self):
        veer = self.veer({"attempts": 2, "on": ["gateway-error"], "backoff_base": "5ms"}, protocol="h2c")
        self.bad.fault(error_rate=1.0)
        for _ in range(4):
            st, h, _ = veer.request("GET", "/status/200")
            self.assertEqual((st, h.get("x-pod")), (200, "blue-2"))
            st, h, body = veer.request("POST", "/echo", b"p" * 500)
            self.assertEqual((st, h.get("x-pod"), body), (200, "blue-2", b"p" * 500))

    def test_reset_retried_on_other_endpoint(self):
        veer = self.veer({"attempts": 2, "on": ["reset", "connect-failure"], "backoff_base": "5ms"})
        self.bad.fault(reset_rate=1.0)
        for _ in range(6):
            st, h, _ = veer.request("GET", "/status/200")
            self.assertEqual((st, h.get("x-pod")), (200, "blue-2"))

    def test_post_body_replayed_unless_too_big(self):
        veer = self.veer({"attempts": 2, "on": ["503"], "max_body_bytes": 1024, "backoff_base": "5ms"})
        self.bad.fault(error_rate=1.0)
        small = b"s" * 300
        big = b"b" * 4096
        for _ in range(4):
            st, h, body = veer.request("POST", "/echo", small)
            self.assertEqual((st, h.get("x-pod")), (200, "blue-2"))
            self.assertEqual(body, small)
        got = set()
        for _ in range(4):
            st, h, body = veer.request("POST", "/echo", big)
            self.assertIsNone(h.get("x-veer-attempts"))
            got.add(st)
            if st == 200:
                self.assertEqual(body, big)
        self.assertEqual(got, {200, 503})  # the bad pod's 503 passes through: that body was not kept

    def test_zero_budget_stops_retries(self):
        veer = self.veer({"attempts": 3, "on": ["503"], "budget_percent": 0, "min_retry_concurrency": 0})
        self.bad.fault(error_rate=1.0)
        statuses = [veer.request("GET", "/status/200")[0] for _ in range(6)]
        self.assertEqual(sorted(statuses), [200] * 3 + [503] * 3)

    def test_per_try_timeout_moves_to_other_pod(self):
        veer = self.veer({"attempts": 2, "on": ["timeout"], "per_try_timeout": "200ms", "backoff_base": "1ms"})
        self.bad.fault(latency="2s")
        for _ in range(4):
            t0 = time.time()
            st, h, _ = veer.request("GET", "/status/200")
            elapsed = time.time() - t0
            self.assertEqual((st, h.get("x-pod")), (200, "blue-2"))
            if h.get("x-veer-attempts") == "2":
                self.assertGreaterEqual(elapsed, 0.19)
                self.assertLess(elapsed, 0.2 + 0.3 * SLOW)

    def test_per_try_timeout_answers_504(self):
        veer = self.veer({"per_try_timeout": "300ms"}, endpoints=[self.bad.addr])
        self.bad.fault(latency="2s")
        t0 = time.time()
        st, _, body = veer.request("GET", "/status/200")
        elapsed = time.time() - t0
        self.assertEqual(st, 504)
        self.assertIn(b"per-try timeout", body)
        self.assertGreaterEqual(elapsed, 0.27)
        self.assertLess(elapsed, 0.33 + 0.2 * (SLOW - 1))


if __name__ == "__main__":
    unittest.main()
