"""Active health checks: an endpoint failing its health path stops getting
traffic within interval x unhealthy_threshold and comes back after
healthy_threshold passes; with require_initial_pass a new endpoint is not
routed to before its first pass; a pass un-ejects an ejected host; a TLS
cluster is probed over TLS (HAProxy terminating in front of a pod)."""

import os
import shutil
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import SLOW, MockPod, Veer, base_config, wait_until  # noqa: E402

HC = {"path": "/health", "interval": "200ms", "timeout": "150ms", "healthy_threshold": 2,
      "unhealthy_threshold": 2, "jitter": "10ms"}


def setUpModule():
    harness.require_binaries()


def route():
    return [{"name": "all", "match": {"path_prefix": "/"}, "split": [{"cluster": "blue", "weight": 100}]}]


def endpoint(veer, addr):
    for e in veer.status()["clusters"][0]["endpoints"]:
        if e["address"] == addr:
            return e
    raise AssertionError(addr)


class HealthTest(unittest.TestCase):
    def setUp(self):
        self.p1, self.p2 = harness.pods_for_test(self, "blue-1", "blue-2")

    def start(self, **hc):
        check = dict(HC)
        check.update(hc)
        cfg = base_config({"blue": {"endpoints": [self.p1.addr, self.p2.addr], "lb": "round_robin",
                                    "health_check": check}}, route(), workers=2)
        return Veer(cfg)

    def pods_seen(self, veer, n=10):
        seen = []
        for _ in range(n):
            st, h, _ = veer.request("GET", "/status/200")
            seen.append((st, h.get("x-pod")))
        return seen

    def test_failing_endpoint_leaves_and_returns(self):
        veer = self.start()
        wait_until(lambda: all(endpoint(veer, p.addr)["health"]["state"] == "healthy" for p in (self.p1, self.p2)),
                   3 * SLOW, what="both healthy")
        self.p1.fault(health_fail=True)
        t0 = time.time()
        wait_until(lambda: endpoint(veer, self.p1.addr)["routable"] is False, 2 * SLOW, interval=0.02,
                   what="p1 unroutable")
        # 2 failed checks 200 ms apart (+ jitter, the probe's own time, the 20 ms owner tick)
        self.assertLess(time.time() - t0, 0.2 * 2 + 0.3 + 0.5 * (SLOW - 1))
        self.assertEqual(endpoint(veer, self.p1.addr)["health"]["state"], "unhealthy")
        self.assertEqual(set(self.pods_seen(veer)), {(200, "blue-2")})
        self.p1.fault(health_fail=False)
        t0 = time.time()
        wait_until(lambda: endpoint(veer, self.p1.addr)["routable"], 2 * SLOW, interval=0.02, what="p1 back")
        self.assertGreater(time.time() - t0, 0.15)  # two passes: not on the first one
        self.assertEqual({p for _, p in self.pods_seen(veer)}, {"blue-1", "blue-2"})

    def test_new_endpoint_not_routed_before_first_pass(self):
        self.p1.fault(health_fail=True)
        veer = self.start(interval="300ms")
        # From the very first request: never p1; p2 only once it passed (before: no healthy endpoint)
        deadline = time.time() + 1.5
        got = []
        while time.time() < deadline:
            st, h, body = veer.request("GET", "/status/200")
            got.append((st, h.get("x-pod")))
            if st == 503:
                self.assertIn(b"no healthy endpoint", body)
        self.assertNotIn("blue-1", {p for _, p in got})
        self.assertIn((200, "blue-2"), got)
        self.assertEqual(endpoint(veer, self.p1.addr)["health"]["state"], "unhealthy")
        self.assertEqual(endpoint(veer, self.p2.addr)["health"]["state"], "healthy")

    def test_health_pass_unejects(self):
        cfg = base_config({"blue": {"endpoints": [self.p1.addr, self.p2.addr], "lb": "round_robin",
                                    "health_check": HC,
                                    "outlier_detection": {"consecutive_gateway_failure": 2,
                                                          "base_ejection_time": "60s"}}}, route(), workers=1)
        veer = Veer(cfg)
        wait_until(lambda: all(endpoint(veer, p.addr)["routable"] for p in (self.p1, self.p2)), 3 * SLOW,
                   what="both routable")
        self.p1.fault(error_rate=1.0)  # /health is never faulted: its checks keep passing
        wait_until(lambda: veer.request("GET", "/status/200") and endpoint(veer, self.p1.addr)["ejection"]["ejected"],
                   3 * SLOW, interval=0.03, what="ejection")
        self.p1.fault(error_rate=0.0)
        t0 = time.time()
        wait_until(lambda: endpoint(veer, self.p1.addr)["routable"], 2 * SLOW, interval=0.02, what="un-ejection")
        self.assertLess(time.time() - t0, 1.0 * SLOW)  # the next passing check, not the 60 s ejection


class TlsHealthTest(unittest.TestCase):
    def test_tls_cluster_probed_over_tls(self):
        if shutil.which("haproxy") is None or shutil.which("openssl") is None:
            self.skipTest("haproxy and openssl are needed")
        import test_tls  # its PKI helpers and HAProxy front
        os.makedirs(test_tls.PKI, exist_ok=True)
        test_tls.make_ca("hc-ca")
        test_tls.make_cert("hc-server", "hc-ca", 0x7007, "serverAuth")
        pod = MockPod("blue-1")
        hp = test_tls.HAProxy(pod.addr, cert="hc-server")
        try:
            cfg = base_config({"blue": {"endpoints": [hp.addr], "tls": {"ca": test_tls.p("hc-ca.pem")},
                                        "health_check": HC}}, route(), workers=1)
            veer = Veer(cfg)
            # a plain-text probe would get HAProxy's 400 and never pass
            wait_until(lambda: endpoint(veer, hp.addr)["health"]["state"] == "healthy", 3 * SLOW, what="healthy")
            self.assertEqual(veer.request("GET", "/status/200")[0], 200)
            pod.fault(health_fail=True)
            wait_until(lambda: endpoint(veer, hp.addr)["health"]["state"] == "unhealthy", 3 * SLOW,
                       what="unhealthy")
            self.assertEqual(endpoint(veer, hp.addr)["health"]["last_status"], 503)
            # the only host fails its checks: below panic_threshold, so it still gets traffic (Envoy's panic)
            self.assertTrue(veer.status()["clusters"][0]["panic"])
            self.assertEqual(veer.request("GET", "/status/200")[0], 200)
        finally:
            harness.kill(hp.proc)
            pod.stop()


if __name__ == "__main__":
    unittest.main()
