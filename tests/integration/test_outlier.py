"""Passive outlier detection on the data path: an endpoint answering 503 is
ejected after exactly consecutive_gateway_failure failures and gets traffic
back after the ejection time, which grows on re-ejection; a hung endpoint is
ejected by the latency detector; a one-pod canary that is ejected sends its
share to the failover cluster (and, without failover, panic routing keeps it)."""

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


def route(split):
    return [{"name": "all", "match": {"path_prefix": "/"},
             "split": [{"cluster": c, "weight": w} for c, w in split]}]


def endpoint_status(veer, cluster, addr):
    for c in veer.status()["clusters"]:
        if c["name"] == cluster:
            for e in c["endpoints"]:
                if e["address"] == addr:
                    return e
    raise AssertionError("no endpoint %s in cluster %s" % (addr, cluster))


def cluster_status(veer, cluster):
    return [c for c in veer.status()["clusters"] if c["name"] == cluster][0]


class OutlierTest(unittest.TestCase):
    def setUp(self):
        self.bad, self.good = harness.pods_for_test(self, "blue-1", "blue-2")

    def veer_with(self, outlier, workers=1, **cluster):
        c = {"endpoints": [self.bad.addr, self.good.addr], "lb": "round_robin", "outlier_detection": outlier}
        c.update(cluster)
        return Veer(base_config({"blue": c}, route([("blue", 100)]), workers=workers))

    def test_gateway_failures_eject_after_exactly_n(self):
        veer = self.veer_with({"consecutive_gateway_failure": 3, "base_ejection_time": "1500ms"})
        self.bad.fault(error_rate=1.0)
        failures = 0
        for _ in range(40):  # round robin: every other request to the bad pod
            st, _, _ = veer.request("GET", "/status/200")
            failures += st == 503
            time.sleep(0.06)  # past the owner's 20 ms drain: the ejection is in before the next
            if failures == 3:
                break
        self.assertEqual(failures, 3)
        t0 = time.time()
        ep = endpoint_status(veer, "blue", self.bad.addr)
        self.assertTrue(ep["ejection"]["ejected"], ep)
        self.assertEqual(ep["ejection"]["reason"], "gateway", ep)
        self.assertFalse(ep["routable"], ep)
        self.assertEqual(cluster_status(veer, "blue")["ejections_total"]["gateway"], 1)
        label = '{cluster="blue",endpoint="%s"}'
        self.assertEqual((harness.metric(veer, "veer_endpoint_ejected", label % self.bad.addr),
                          harness.metric(veer, "veer_endpoint_ejected", label % self.good.addr)), (1, 0))
        # traffic moved at once: every request goes to the other pod
        for _ in range(20):
            st, h, _ = veer.request("GET", "/status/200")
            self.assertEqual((st, h.get("x-pod")), (200, "blue-2"))
        # back after base_ejection_time (1.5 s) for the first ejection
        self.bad.fault(error_rate=0.0)
        wait_until(lambda: endpoint_status(veer, "blue", self.bad.addr)["routable"], 4 * SLOW, what="un-ejection")
        self.assertGreater(time.time() - t0, 1.2)
        pods = {veer.request("GET", "/status/200")[1].get("x-pod") for _ in range(6)}
        self.assertEqual(pods, {"blue-1", "blue-2"})

    def test_h2c_cluster_ejects_too(self):
        veer = self.veer_with({"consecutive_gateway_failure": 3, "base_ejection_time": "30s"}, protocol="h2c")
        self.bad.fault(error_rate=1.0)
        statuses = [veer.request("GET", "/status/200")[0] for _ in range(6)]
        self.assertEqual(statuses.count(503), 3)  # round robin: requests 1, 3, 5 to the bad pod
        wait_until(lambda: endpoint_status(veer, "blue", self.bad.addr)["ejection"]["ejected"], 2 * SLOW,
                   what="ejection")
        self.assertEqual([veer.request("GET", "/status/200")[0] for _ in range(10)], [200] * 10)

    def test_ejection_time_grows_on_re_ejection(self):
        veer = self.veer_with({"consecutive_gateway_failure": 2, "base_ejection_time": "700ms",
                               "max_ejection_time": "10s"})
        self.bad.fault(error_rate=1.0)

        def eject():
            wait_until(lambda: veer.request("GET", "/status/200")[0] == 503 and False or
                       endpoint_status(veer, "blue", self.bad.addr)["ejection"]["ejected"], 5 * SLOW,
                       interval=0.03, what="ejection")
            return endpoint_status(veer, "blue", self.bad.addr)["ejection"]

        first = eject()
        self.assertLessEqual(first["remaining_ms"], 700)
        wait_until(lambda: endpoint_status(veer, "blue", self.bad.addr)["routable"], 3 * SLOW, what="return")
        second = eject()
        self.assertGreater(second["remaining_ms"], 700, second)  # 2 x base
        self.assertLessEqual(second["remaining_ms"], 1400, second)
        self.assertEqual(second["ejections_total"], 2)

    def test_hung_pod_ejected_by_latency_detector(self):
        veer = self.veer_with({"consecutive_gateway_failure": 1000, "latency_p99_max": "100ms",
                               "latency_request_volume": 4, "interval": "400ms", "base_ejection_time": "30s"},
                              workers=2)
        self.bad.fault(latency="300ms")
        stop = time.time() + 4 * SLOW

        def client():
            while time.time() < stop and not done.is_set():
                try:
                    veer.request("GET", "/status/200", timeout=5)
                except OSError:
                    pass

        done = threading.Event()
        threads = [threading.Thread(target=client) for _ in range(6)]
        for t in threads:
            t.start()
        try:
            wait_until(lambda: endpoint_status(veer, "blue", self.bad.addr)["ejection"]["ejected"], 4 * SLOW,
                       what="latency ejection")
        finally:
            done.set()
            for t in threads:
                t.join()
        ep = endpoint_status(veer, "blue", self.bad.addr)
        self.assertEqual(ep["ejection"]["reason"], "latency", ep)
        self.assertFalse(endpoint_status(veer, "blue", self.good.addr)["ejection"]["ejected"])
        for _ in range(6):
            st, h, _ = veer.request("GET", "/status/200")
            self.assertEqual((st, h.get("x-pod")), (200, "blue-2"))


class SuccessRateTest(unittest.TestCase):
    def test_one_bad_host_of_five(self):
        pods = [MockPod("blue-%d" % i) for i in range(1, 6)]
        try:
            pods[0].fault(error_rate=0.5)
            cfg = base_config({"blue": {"endpoints": [p.addr for p in pods], "lb": "round_robin",
                                        "outlier_detection": {"consecutive_gateway_failure": 1000,
                                                              "consecutive_5xx": 1000,
                                                              "interval": "500ms",
                                                              "success_rate_request_volume": 20,
                                                              "success_rate_minimum_hosts": 5,
                                                              "max_ejection_percent": 20,
                                                              "base_ejection_time": "30s"}}},
                              route([("blue", 100)]), workers=2)
            veer = Veer(cfg)
            t0 = time.time()
            while time.time() - t0 < 4 * SLOW:
                harness.fan_out(veer.port, 100, "GET", "/status/200", threads=4)
                if endpoint_status(veer, "blue", pods[0].addr)["ejection"]["ejected"]:
                    break
            ep = endpoint_status(veer, "blue", pods[0].addr)
            self.assertTrue(ep["ejection"]["ejected"], ep)
            self.assertEqual(ep["ejection"]["reason"], "success_rate")
            for p in pods[1:]:
                self.assertFalse(endpoint_status(veer, "blue", p.addr)["ejection"]["ejected"])
        finally:
            for p in pods:
                p.stop()


class CanaryFailoverTest(unittest.TestCase):
    def setUp(self):
        self.blue, self.canary = harness.pods_for_test(self, "blue-1", "canary-1")

    def config(self, failover):
        canary = {"endpoints": [self.canary.addr],
                  "outlier_detection": {"consecutive_gateway_failure": 3, "base_ejection_time": "30s"}}
        if failover:
            canary["failover"] = "blue"
        return base_config({"blue": [self.blue.addr], "canary": canary},
                           route([("blue", 50), ("canary", 50)]), workers=2)

    def test_ejected_one_pod_canary_fails_over(self):
        veer = Veer(self.config(True))
        self.canary.fault(error_rate=1.0)
        wait_until(lambda: veer.request("GET", "/status/200")[0] == 503 and False or
                   endpoint_status(veer, "canary", self.canary.addr)["ejection"]["ejected"], 5 * SLOW,
                   interval=0.02, what="canary ejection")
        # the first ejection of a one-host pool is not blocked by max_ejection_percent (10%)
        self.assertTrue(cluster_status(veer, "canary")["panic"])
        self.assertEqual(cluster_status(veer, "canary")["failover"], "blue")
        before = self.canary.stats()["requests_total"]
        for _ in range(30):
            st, h, _ = veer.request("GET", "/status/200")
            self.assertEqual((st, h.get("x-pod")), (200, "blue-1"))
        self.assertEqual(self.canary.stats()["requests_total"], before)
        events = [l for l in veer.json_log_lines() if l.get("event") == "outlier_eject"]
        self.assertEqual(len(events), 1, events)
        self.assertEqual((events[0]["cluster"], events[0]["endpoint"], events[0]["reason"]),
                         ("canary", self.canary.addr, "gateway"))

    def test_failover_and_back(self):
        cfg = self.config(True)
        cfg["clusters"]["canary"]["outlier_detection"]["base_ejection_time"] = "800ms"
        veer = Veer(cfg)
        self.canary.fault(error_rate=1.0)
        wait_until(lambda: veer.request("GET", "/status/200")[0] == 503 and False or
                   cluster_status(veer, "canary")["panic"], 5 * SLOW, interval=0.02, what="canary ejection")
        self.assertEqual({veer.request("GET", "/status/200")[1].get("x-pod") for _ in range(10)}, {"blue-1"})
        self.canary.fault(error_rate=0.0)
        wait_until(lambda: not cluster_status(veer, "canary")["panic"], 3 * SLOW, what="canary back")
        pods = [veer.request("GET", "/status/200")[1].get("x-pod") for _ in range(40)]
        self.assertIn("canary-1", pods)
        self.assertIn("blue-1", pods)

    def test_without_failover_panic_routes_to_all(self):
        veer = Veer(self.config(False))
        self.canary.fault(error_rate=1.0)
        wait_until(lambda: veer.request("GET", "/status/200")[0] == 503 and False or
                   endpoint_status(veer, "canary", self.canary.addr)["ejection"]["ejected"], 5 * SLOW,
                   interval=0.02, what="canary ejection")
        self.assertTrue(cluster_status(veer, "canary")["panic"])
        statuses = [veer.request("GET", "/status/200")[0] for _ in range(30)]
        self.assertIn(503, statuses)  # panic: the ejected host still gets the canary's share
        self.assertIn(200, statuses)


if __name__ == "__main__":
    unittest.main()
