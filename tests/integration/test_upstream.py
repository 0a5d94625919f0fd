"""Upstream side: keep-alive connection reuse, connect failures, the route
timeout, the retry of an idempotent request reset before any response byte,
and endpoints given as DNS names."""

import collections
import json
import os
import re
import socket
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import MockPod, Veer, base_config, fan_out, free_port  # noqa: E402

# Requests the mock pod's reset fault applies to (an idempotent GET and a POST).
RESET_GET = ("GET", "/status/200", None)
RESET_POST = ("POST", "/echo", b"x" * 100)


def setUpModule():
    harness.require_binaries()


def one_route(cluster="blue", **extra):
    r = {"name": "all", "match": {"path_prefix": "/"}, "split": [{"cluster": cluster, "weight": 100}]}
    r.update(extra)
    return [r]


def connections_to(port):
    """Distinct TCP connections (any state, TIME-WAIT included) that have
    `port` at one end, the listening socket excluded."""
    out = subprocess.run(["ss", "-tanH", "( sport = :%d or dport = :%d )" % (port, port)],
                         capture_output=True, text=True, timeout=10).stdout
    peers = set()
    for line in out.splitlines():
        f = line.split()
        if len(f) < 5 or f[0] == "LISTEN":
            continue
        local, peer = f[3], f[4]
        lp, pp = int(local.rsplit(":", 1)[1]), int(peer.rsplit(":", 1)[1])
        if lp == port:
            peers.add(pp)
        elif pp == port:
            peers.add(lp)
    return peers


class UpstreamTest(unittest.TestCase):
    def test_keep_alive_reuse(self):
        pod = MockPod("blue-1")
        veer = Veer(base_config({"blue": [pod.addr]}, one_route(), workers=1))
        before = connections_to(pod.port)
        # 100 on one client connection, 100 each on a new client connection
        conn = veer.connection()
        for i in range(100):
            st, _, _ = harness.do_request(conn, "GET", "/status/200")
            self.assertEqual(st, 200)
        conn.close()
        for i in range(100):
            st, _, _ = veer.request("GET", "/status/200")
            self.assertEqual(st, 200)
        used = connections_to(pod.port) - before
        self.assertLessEqual(len(used), 3, "200 sequential requests used %d upstream connections" % len(used))
        veer.stop()
        pod.stop()

    def test_connect_failure_is_503_json(self):
        dead = "127.0.0.1:%d" % free_port()
        veer = Veer(base_config({"dead": {"endpoints": [dead], "connect_timeout": "1s"}}, one_route("dead")))
        for _ in range(3):
            t0 = time.time()
            st, hd, body = veer.request("GET", "/x")
            self.assertIn(st, (502, 503), body)
            self.assertIn("error", json.loads(body))
            self.assertLess(time.time() - t0, 2.0 * harness.SLOW, "a refused connect took too long")
        veer.stop()

    def test_route_timeout_504(self):
        pod = MockPod("blue-1")
        veer = Veer(base_config({"blue": [pod.addr]}, one_route(timeout="1s")))
        t0 = time.time()
        st, hd, body = veer.request("GET", "/slow?ms=3000")
        took = time.time() - t0
        self.assertEqual(st, 504, body)
        self.assertIn("error", json.loads(body))
        # at the route timeout, within 10% (plus sanitizer slack on the late side)
        self.assertGreaterEqual(took, 0.9, "504 after %.2fs for a 1s timeout" % took)
        self.assertLess(took, 1.1 + (0.2 if harness.ASAN else 0), "504 after %.2fs for a 1s timeout" % took)
        # a request under the timeout is fine
        st, _, _ = veer.request("GET", "/slow?ms=200")
        self.assertEqual(st, 200)
        veer.stop()
        pod.stop()

    def test_idempotent_retry_on_reset(self):
        pod = MockPod("blue-1")
        veer = Veer(base_config({"blue": [pod.addr]}, one_route()))
        st, _, _ = veer.request(*RESET_GET)
        self.assertEqual(st, 200)
        pod.fault(reset_rate=0.5)
        n = 600

        def rate(method, path, body):
            res = fan_out(veer.port, n, method, path, body, threads=3)
            codes = collections.Counter(r[1] for r in res)
            self.assertTrue(set(codes) <= {200, 502, 503}, codes)
            return codes[200] / n, codes

        get_ok, get_codes = rate(*RESET_GET)
        post_ok, post_codes = rate(*RESET_POST)
        pod.fault(reset_rate=0.0)
        self.assertGreater(get_ok, 0.60, "GET success %.2f with a 50%% reset pod (no retry?) %r" % (get_ok, get_codes))
        self.assertTrue(0.38 < post_ok < 0.62,
                        "POST success %.2f with a 50%% reset pod (a POST must not be retried) %r"
                        % (post_ok, post_codes))
        veer.stop()
        pod.stop()

    def test_dns_name_endpoint(self):
        pod4 = MockPod("blue-1")
        pods = [pod4]
        families = {ai[0] for ai in socket.getaddrinfo("localhost", pod4.port, 0, socket.SOCK_STREAM)}
        if socket.AF_INET6 in families:  # localhost is ::1 too: serve both addresses
            pods.append(MockPod("blue-2", listen="[::1]:%d" % pod4.port))
        veer = Veer(base_config({"blue": {"endpoints": ["localhost:%d" % pod4.port], "dns_refresh": "1s"}},
                                one_route()))
        res = fan_out(veer.port, 40, "GET", "/status/200", threads=2)
        codes = collections.Counter((r[1], r[2]) for r in res)
        self.assertEqual({c for c, _ in codes}, {200}, codes)
        self.assertTrue({p for _, p in codes} <= {p.name for p in pods}, codes)
        # still fine after a DNS refresh
        time.sleep(1.5)
        res = fan_out(veer.port, 10, "GET", "/status/200", threads=1)
        self.assertEqual({r[1] for r in res}, {200}, res)
        veer.stop()
        for p in pods:
            p.stop()


if __name__ == "__main__":
    harness.main()
