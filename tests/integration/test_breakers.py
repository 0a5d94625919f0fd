"""Circuit breakers on the request path: max_requests trips at its exact
limit with 503 x-veer-overloaded at once, counted per kind in /v1/status,
and its slots come back when the requests end; at max_connections a request
waits in the pending FIFO (its body kept) until a connection closes, or
until connect_timeout, and max_pending_requests bounds the waiters."""

import os
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import SLOW, MockPod, Veer, base_config, wait_until  # noqa: E402


def setUpModule():
    harness.require_binaries()


def breakers(veer):
    return veer.status()["clusters"][0]["circuit_breakers"]


class BreakerTest(unittest.TestCase):
    def test_max_requests_overflow_answers_at_once(self):
        pod = MockPod("blue-1")
        try:
            cfg = base_config({"blue": {"endpoints": [pod.addr], "circuit_breakers": {"max_requests": 5}}},
                              [{"name": "all", "match": {"path_prefix": "/"},
                                "split": [{"cluster": "blue", "weight": 100}]}], workers=2)
            veer = Veer(cfg)
            results = []

            def slow():
                results.append(veer.request("GET", "/slow?ms=1500", timeout=10)[0])

            threads = [threading.Thread(target=slow) for _ in range(5)]
            for t in threads:
                t.start()
            wait_until(lambda: breakers(veer)["max_requests"]["active"] == 5, 3 * SLOW, what="5 in flight")
            self.assertTrue(breakers(veer)["max_requests"]["open"])
            t0 = time.time()
            st, h, body = veer.request("GET", "/status/200")
            elapsed = time.time() - t0
            self.assertEqual(st, 503)
            self.assertEqual(h.get("x-veer-overloaded"), "true")
            self.assertIn(b"max_requests", body)
            self.assertLess(elapsed, 0.05 * SLOW)
            b = breakers(veer)
            self.assertEqual(b["max_requests"]["overflows"], 1)
            self.assertEqual(b["max_requests"]["limit"], 5)
            st, text = veer.admin("GET", "/metrics")
            self.assertEqual(st, 200)
            self.assertIn('veer_circuit_breaker_open{cluster="blue",kind="max_requests"} 1\n', text)
            self.assertIn('veer_circuit_breaker_overflow_total{cluster="blue",kind="max_requests"} 1\n', text)
            self.assertIn('veer_circuit_breaker_overflow_total{cluster="blue",kind="max_pending_requests"} 0\n', text)
            for t in threads:
                t.join()
            self.assertEqual(results, [200] * 5)
            wait_until(lambda: breakers(veer)["max_requests"]["active"] == 0, 2 * SLOW, what="slots released")
            self.assertFalse(breakers(veer)["max_requests"]["open"])
            self.assertEqual(veer.request("GET", "/status/200")[0], 200)
        finally:
            pod.stop()


class ConnectionBreakerTest(unittest.TestCase):
    def setUp(self):
        self.pod = harness.pods_for_test(self, "blue-1")[0]

    def veer(self, connect_timeout, max_pending=1024):
        cfg = base_config({"blue": {"endpoints": [self.pod.addr], "connect_timeout": connect_timeout,
                                    "circuit_breakers": {"max_connections": 2,
                                                         "max_pending_requests": max_pending}}},
                          [{"name": "all", "match": {"path_prefix": "/"},
                            "split": [{"cluster": "blue", "weight": 100}]}], workers=1,
                          limits={"max_idle_upstream": 0})
        return Veer(cfg)

    def hold_two(self, veer, ms):
        results = []

        def slow():
            results.append(veer.request("GET", "/slow?ms=%d" % ms, timeout=10)[0])

        threads = [threading.Thread(target=slow) for _ in range(2)]
        for t in threads:
            t.start()
        wait_until(lambda: breakers(veer)["max_connections"]["active"] == 2, 3 * SLOW, what="2 connections")
        return threads, results

    def test_waits_for_a_connection_then_goes(self):
        veer = self.veer("3s")
        threads, results = self.hold_two(veer, 600)
        t0 = time.time()
        st, _, body = veer.request("POST", "/echo", b"w" * 2000)
        self.assertEqual((st, body), (200, b"w" * 2000))  # the body waited with the request
        self.assertGreater(time.time() - t0, 0.3)          # until one of the slow two ended
        for t in threads:
            t.join()
        self.assertEqual(results, [200, 200])
        self.assertEqual(breakers(veer)["max_pending_requests"]["active"], 0)

    def test_pending_times_out_and_limit_overflows(self):
        veer = self.veer("300ms", max_pending=1)
        threads, _ = self.hold_two(veer, 1500)
        waiter = []
        w = threading.Thread(target=lambda: waiter.append((veer.request("GET", "/status/200"), time.time())))
        t0 = time.time()
        w.start()
        wait_until(lambda: breakers(veer)["max_pending_requests"]["active"] == 1, 2 * SLOW, what="one waiting")
        st, h, body = veer.request("GET", "/status/200")  # the second waiter: over max_pending_requests
        self.assertEqual((st, h.get("x-veer-overloaded")), (503, "true"))
        self.assertIn(b"max_pending_requests", body)
        w.join()
        (st, h, body), done = waiter[0]
        self.assertEqual((st, h.get("x-veer-overloaded")), (503, "true"))
        self.assertIn(b"connect_timeout", body)
        self.assertGreater(done - t0, 0.25)
        self.assertLess(done - t0, 0.3 + 0.3 * SLOW)
        b = breakers(veer)
        self.assertEqual(b["max_pending_requests"]["overflows"], 1)
        self.assertEqual(b["max_connections"]["overflows"], 2)
        for t in threads:
            t.join()


if __name__ == "__main__":
    unittest.main()
