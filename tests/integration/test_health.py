"""Active health checks: an endpoint failing its health path stops getting
traffic within interval x unhealthy_threshold and comes back after
healthy_threshold passes; with require_initial_pass a new endpoint is not
routed to before its first pass; a pass un-ejects an ejected host; a TLS
cluster is probed over TLS (HAProxy terminating in front of a pod); an h2c
cluster of pods that refuse HTTP/1.1 is probed over HTTP/2; gRPC health
checks (grpc_service) follow SERVING / NOT_SERVING and name what failed;
/v1/status and `veer ctl status` show each endpoint's last failed check."""

import datetime
import http.client
import os
import shutil
import subprocess
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


def iso_time(text):
    """Seconds since the epoch of an ISO 8601 UTC time like 2026-01-02T03:04:05.678Z."""
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def ctl(veer, *args):
    p = subprocess.run([harness.VEER_BIN, "ctl", "--admin", "127.0.0.1:%d" % veer.admin_port] + list(args),
                       capture_output=True, text=True, timeout=20)
    return p.returncode, p.stdout, p.stderr


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

    def test_last_failure_shows_why(self):
        veer = self.start()
        wait_until(lambda: all(endpoint(veer, p.addr)["health"]["state"] == "healthy" for p in (self.p1, self.p2)),
                   3 * SLOW, what="both healthy")
        self.assertIsNone(endpoint(veer, self.p2.addr)["health"]["last_failure"])  # never failed a probe
        t_fail = time.time()
        self.p1.fault(health_fail=True)
        wait_until(lambda: endpoint(veer, self.p1.addr)["health"]["state"] == "unhealthy", 2 * SLOW,
                   interval=0.02, what="p1 unhealthy")
        first = endpoint(veer, self.p1.addr)["health"]["last_failure"]
        self.assertEqual(first["reason"], "status 503")
        # /metrics and /v1/stats say so too (both read the endpoint's flags)
        label = '{cluster="blue",endpoint="%s"}'
        self.assertEqual((harness.metric(veer, "veer_endpoint_healthy", label % self.p1.addr),
                          harness.metric(veer, "veer_endpoint_healthy", label % self.p2.addr)), (0, 1))
        self.assertGreaterEqual(first["consecutive"], 2)  # unhealthy_threshold
        # the count grows with each failed probe while the pod stays down
        wait_until(lambda: endpoint(veer, self.p1.addr)["health"]["last_failure"]["consecutive"]
                   >= first["consecutive"] + 2, 2 * SLOW, interval=0.05, what="consecutive growing")
        at = iso_time(first["at"])
        self.assertTrue(t_fail - 1 <= at <= time.time() + 1, (first, t_fail))
        rc, out, err = ctl(veer, "status")
        self.assertEqual(rc, 0, err)
        line = next((ln for ln in out.splitlines() if ln.startswith("endpoint ") and self.p1.addr in ln), None)
        self.assertIsNotNone(line, out)
        self.assertRegex(line, r"^endpoint blue %s unhealthy: status 503 \(\d+ in a row, last \S+Z\)$"
                         % self.p1.addr)
        self.assertNotIn(self.p2.addr, out)  # healthy endpoints stay off the short form
        # recovered: healthy again, the last failure (and its time) stays
        self.p1.fault(health_fail=False)
        t_back = time.time()
        wait_until(lambda: endpoint(veer, self.p1.addr)["health"]["state"] == "healthy", 2 * SLOW,
                   interval=0.02, what="p1 healthy")
        kept = endpoint(veer, self.p1.addr)["health"]["last_failure"]
        self.assertEqual(kept["reason"], "status 503")
        wait_until(lambda: harness.metric(veer, "veer_endpoint_healthy", label % self.p1.addr) == 1, 1 * SLOW,
                   what="the healthy gauge back at 1")
        self.assertGreaterEqual(kept["consecutive"], first["consecutive"] + 2)
        self.assertTrue(at <= iso_time(kept["at"]) <= t_back + 0.5, (kept, t_back))
        time.sleep(0.5)  # more passing probes change nothing about it
        self.assertEqual(endpoint(veer, self.p1.addr)["health"]["last_failure"], kept)
        self.assertTrue(endpoint(veer, self.p1.addr)["routable"])
        rc, out, _ = ctl(veer, "status")
        self.assertNotIn("endpoint ", out)

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


def tls_pki(ca, server, serial):
    """test_tls's PKI helpers and HAProxy front, with a CA and a server
    certificate made; skips the test without haproxy or openssl."""
    if shutil.which("haproxy") is None or shutil.which("openssl") is None:
        raise unittest.SkipTest("haproxy and openssl are needed")
    import test_tls
    os.makedirs(test_tls.PKI, exist_ok=True)
    test_tls.make_ca(ca)
    test_tls.make_cert(server, ca, serial, "serverAuth")
    return test_tls


class TlsHealthTest(unittest.TestCase):
    def test_tls_cluster_probed_over_tls(self):
        test_tls = tls_pki("hc-ca", "hc-server", 0x7007)
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


def health_details(veer, addr, to):
    """The detail of every health_change log line of endpoint addr to state `to`."""
    lines = veer.json_log_lines("stderr") + veer.json_log_lines("stdout")
    return [e.get("detail", "") for e in lines
            if e.get("event") == "health_change" and e.get("endpoint") == addr and e.get("to") == to]


class H2HealthTest(unittest.TestCase):
    """Pods that speak only HTTP/2 (like grpc-go / grpc-java servers)."""

    def setUp(self):
        self.p1, self.p2 = harness.pods_for_test(self, "blue-1", "blue-2")
        for p in (self.p1, self.p2):
            p.fault(h2_only=True)  # the control routes (/fault, /stats) keep answering HTTP/1.1

    def start(self, **hc):
        check = dict(HC)
        check.update(hc)
        if check["path"] is None:  # a gRPC check needs no path
            del check["path"]
        cfg = base_config({"blue": {"endpoints": [self.p1.addr, self.p2.addr], "lb": "round_robin",
                                    "protocol": "h2c", "health_check": check}}, route(), workers=2)
        return Veer(cfg)

    def pods_seen(self, veer, n=10):
        return [(st, h.get("x-pod")) for st, h, _ in (veer.request("GET", "/status/200") for _ in range(n))]

    def test_h2c_get_probe_over_http2(self):
        # an HTTP/1.1 probe of these pods could never pass: the connection closes unanswered
        with self.assertRaises((http.client.HTTPException, ConnectionError)):
            self.p1.request("GET", "/health", timeout=3)
        veer = self.start()
        wait_until(lambda: all(endpoint(veer, p.addr)["health"]["state"] == "healthy" for p in (self.p1, self.p2)),
                   3 * SLOW, what="both healthy over HTTP/2")
        self.assertEqual(set(self.pods_seen(veer)), {(200, "blue-1"), (200, "blue-2")})
        self.p1.fault(health_fail=True)
        wait_until(lambda: endpoint(veer, self.p1.addr)["health"]["state"] == "unhealthy", 2 * SLOW,
                   interval=0.02, what="p1 unhealthy")
        self.assertEqual(endpoint(veer, self.p1.addr)["health"]["last_status"], 503)
        self.assertEqual(set(self.pods_seen(veer)), {(200, "blue-2")})
        wait_until(lambda: any("status 503" in d for d in health_details(veer, self.p1.addr, "unhealthy")),
                   SLOW, what="log line naming status 503")

    def test_grpc_serving_not_serving(self):
        veer = self.start(path=None, grpc_service="")
        wait_until(lambda: all(endpoint(veer, p.addr)["health"]["state"] == "healthy" for p in (self.p1, self.p2)),
                   3 * SLOW, what="both SERVING")
        self.assertEqual({p for _, p in self.pods_seen(veer)}, {"blue-1", "blue-2"})
        self.p1.fault(health_fail=True)  # the pod now answers NOT_SERVING
        t0 = time.time()
        wait_until(lambda: endpoint(veer, self.p1.addr)["routable"] is False, 2 * SLOW, interval=0.02,
                   what="p1 unroutable")
        # unhealthy_threshold (2) x interval (200 ms) + jitter, the probe's time and the owner tick
        self.assertLess(time.time() - t0, 0.2 * 2 + 0.3 + 0.5 * (SLOW - 1))
        self.assertEqual(set(self.pods_seen(veer)), {(200, "blue-2")})
        wait_until(lambda: health_details(veer, self.p1.addr, "unhealthy"), SLOW, what="health log line")
        self.assertIn("NOT_SERVING", health_details(veer, self.p1.addr, "unhealthy")[0])
        failed = endpoint(veer, self.p1.addr)["health"]["last_failure"]
        self.assertEqual(failed["reason"], "NOT_SERVING")
        self.assertGreaterEqual(failed["consecutive"], 2)
        self.assertIsNone(endpoint(veer, self.p2.addr)["health"]["last_failure"])
        self.p1.fault(health_fail=False)
        t0 = time.time()
        wait_until(lambda: endpoint(veer, self.p1.addr)["routable"], 2 * SLOW, interval=0.02, what="p1 back")
        self.assertGreater(time.time() - t0, 0.15)  # healthy_threshold 2: not on the first pass
        self.assertEqual({p for _, p in self.pods_seen(veer)}, {"blue-1", "blue-2"})
        self.assertEqual(endpoint(veer, self.p1.addr)["health"]["last_failure"]["reason"], "NOT_SERVING")
        self.assertEqual(self.p1.stats().get("errors_injected", 0), 0)

    def test_grpc_failures_name_their_reason(self):
        # p1: a gRPC server without the health service (UNIMPLEMENTED, trailers-only);
        # p2: the health service, but it does not know the service asked for (NOT_FOUND)
        self.p1.fault(grpc_error_rate=1.0, grpc_error_code=12)
        veer = self.start(path=None, grpc_service="akidb.v1.Embed", interval="150ms", timeout="100ms")
        wait_until(lambda: health_details(veer, self.p1.addr, "unhealthy"), 3 * SLOW, what="p1 unhealthy")
        self.assertIn("grpc-status 12", health_details(veer, self.p1.addr, "unhealthy")[0])
        self.assertEqual(endpoint(veer, self.p2.addr)["health"]["state"], "healthy")  # it knows akidb.v1.Embed
        self.p1.fault(grpc_error_rate=0.0)
        wait_until(lambda: endpoint(veer, self.p1.addr)["health"]["state"] == "healthy", 3 * SLOW,
                   what="p1 healthy once the service answers")
        veer.stop()
        veer = self.start(path=None, grpc_service="no.such.Service", interval="150ms", timeout="100ms")
        wait_until(lambda: health_details(veer, self.p2.addr, "unhealthy"), 3 * SLOW, what="p2 unhealthy")
        self.assertIn("grpc-status 5", health_details(veer, self.p2.addr, "unhealthy")[0])

    def test_tls_h2_cluster_grpc_check(self):
        """protocol h2: TLS with ALPN h2 (HAProxy terminating, h2c to the pod), gRPC Check through it."""
        test_tls = tls_pki("hc2-ca", "hc2-server", 0x7008)
        port = harness.free_port()
        addr = "127.0.0.1:%d" % port
        path = os.path.join(harness.TMP, "haproxy-h2-%d.cfg" % port)
        with open(path, "w") as f:
            f.write("global\n  maxconn 64\n"
                    "defaults\n  mode http\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n"
                    "frontend fe\n  bind %s ssl crt %s alpn h2\n  default_backend be\n"
                    "backend be\n  server pod %s proto h2\n" % (addr, test_tls.p("hc2-server.both.pem"), self.p1.addr))
        proc, _, err = harness.spawn(["haproxy", "-db", "-f", path], "haproxy-h2-%d" % port)
        try:
            wait_until(lambda: os.system("ss -tlnH '( sport = :%d )' | grep -q LISTEN" % port) == 0, 10 * SLOW,
                       what="haproxy listening")
            cfg = base_config({"blue": {"endpoints": [addr], "protocol": "h2",
                                        "tls": {"ca": test_tls.p("hc2-ca.pem")},
                                        "health_check": {k: v for k, v in dict(HC, grpc_service="").items()
                                                         if k != "path"}}},
                              route(), workers=1)
            veer = Veer(cfg)
            wait_until(lambda: endpoint(veer, addr)["health"]["state"] == "healthy", 3 * SLOW, what="healthy")
            self.assertEqual(veer.request("GET", "/status/200")[0], 200)
            self.p1.fault(health_fail=True)
            wait_until(lambda: health_details(veer, addr, "unhealthy"), 3 * SLOW, what="unhealthy")
            self.assertIn("NOT_SERVING", health_details(veer, addr, "unhealthy")[0])
        finally:
            harness.kill(proc)


if __name__ == "__main__":
    unittest.main()
