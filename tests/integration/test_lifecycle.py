"""Lifecycle: reloads and weight changes under load lose no request; SIGTERM
drains (in-flight requests finish with `Connection: close`, new connections are
refused, /readyz says 503, exit 0 well before drain_timeout); a request that
outlives drain_timeout does not keep veer alive."""

import collections
import copy
import http.client
import json
import os
import signal
import socket
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import EMBED_BODY, RawConn, Veer, base_config, cluster_of  # noqa: E402

PODS = {}


def setUpModule():
    harness.start_pods(PODS)


def standard_config(drain_timeout="30s", rest_timeout="15s"):
    clusters = {
        "blue": {"endpoints": [PODS["blue-1"].addr, PODS["blue-2"].addr], "lb": "round_robin"},
        "canary": {"endpoints": [PODS["canary-1"].addr]},
    }
    routes = [
        {"name": "embed", "match": {"path_prefix": "/api/v1/embed"},
         "split": [{"cluster": "blue", "weight": 90}, {"cluster": "canary", "weight": 10}],
         "sticky": {"header": "x-user-id"}, "timeout": "10s"},
        {"name": "rest", "match": {"path_prefix": "/"}, "split": [{"cluster": "blue", "weight": 100}],
         "timeout": rest_timeout},
    ]
    return base_config(clusters, routes, limits={"drain_timeout": drain_timeout})


def req(path):
    return b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % path.encode()


def refused(port):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=1)
    except ConnectionRefusedError:
        return True
    s.close()
    return False


class LoadDuringChangesTest(unittest.TestCase):
    def test_reloads_and_weight_changes_under_load(self):
        veer = Veer(standard_config())
        stop = threading.Event()
        results = collections.Counter()
        failures = []
        pods = collections.Counter()
        lock = threading.Lock()

        def client(k):
            conn = veer.connection(timeout=10)
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    if i % 2:
                        st, hd, body = harness.do_request(conn, "POST", "/api/v1/embed", EMBED_BODY,
                                                          {"Content-Type": "application/json"})
                    else:
                        st, hd, body = harness.do_request(conn, "GET", "/status/200")
                    with lock:
                        results[st] += 1
                        pods[cluster_of(hd.get("x-pod"))] += 1
                        if st != 200:
                            failures.append((k, i, st, body[:200]))
                    if hd.get("connection", "").lower() == "close":
                        conn.close()
                        conn = veer.connection(timeout=10)
                except (OSError, http.client.HTTPException) as e:
                    with lock:
                        results["error"] += 1
                        failures.append((k, i, "transport", repr(e)))
                    conn.close()
                    conn = veer.connection(timeout=10)
            conn.close()

        threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        cfg = copy.deepcopy(veer.config)
        splits = [(90, 10), (50, 50), (0, 100), (100, 0), (70, 30)]
        reloads = 0
        try:
            for step in range(20):
                time.sleep(0.25)
                b, c = splits[step % len(splits)]
                st, js = veer.set_weights("embed", {"blue": b, "canary": c})
                self.assertEqual(st, 200, js)
                if step % 4 == 3:
                    reloads += 1
                    cfg["routes"].insert(1, {"name": "extra-%d" % reloads,
                                             "match": {"path_prefix": "/extra-%d" % reloads},
                                             "split": [{"cluster": "canary", "weight": 100}]})
                    veer.write_config(cfg)
                    veer.reload()
        finally:
            time.sleep(0.3)
            stop.set()
            for t in threads:
                t.join()
        self.assertEqual(reloads, 5)
        total = sum(results.values())
        self.assertEqual(failures[:10], [], "%d of %d requests failed during reloads/weight changes" %
                         (len(failures), total))
        self.assertGreater(total, 100, "only %d requests in 5 s" % total)
        self.assertGreater(pods["canary"], 0, pods)
        harness.wait_until(lambda: "extra-5" in json.dumps(veer.admin("GET", "/v1/config")[1]), 3 * harness.SLOW,
                           what="the 5th reload to be live")
        self.assertTrue(veer.alive())
        self.assertEqual(veer.stop(), 0)


class DrainTest(unittest.TestCase):
    def test_sigterm_drains_in_flight(self):
        veer = Veer(standard_config(drain_timeout="10s"))
        idle = RawConn(veer.port, timeout=5)
        self.addCleanup(idle.close)
        idle.send(req("/status/200"))
        self.assertEqual(idle.read_response().status, 200)
        busy = []
        for _ in range(3):
            c = RawConn(veer.port, timeout=10)
            self.addCleanup(c.close)
            c.send(req("/slow?ms=1500"))
            busy.append(c)
        time.sleep(0.3)
        t0 = time.time()
        veer.signal(signal.SIGTERM)

        harness.wait_until(lambda: veer.admin("GET", "/readyz", timeout=1)[0] == 503, 1.0,
                           what="/readyz 503 while draining")
        harness.wait_until(lambda: refused(veer.port), 1.0, what="new connections to be refused while draining")

        for i, c in enumerate(busy):
            r = c.read_response(timeout=5 * harness.SLOW)
            self.assertEqual(r.status, 200, "in-flight request %d: %r" % (i, r))
            self.assertEqual((r.header("connection") or "").lower(), "close",
                             "in-flight response during drain lacks Connection: close: %r" % r)
            self.assertTrue(c.is_closed(2.0), "connection %d left open after the drain response" % i)
            c.close()

        # the idle keep-alive connection: closed by veer, or told to close on its next request
        try:
            if not idle.is_closed(0.5):
                idle.send(req("/status/200"))
                r = idle.read_response()
                self.assertIn(r.status, (200, 503), r)
                self.assertEqual((r.header("connection") or "").lower(), "close", r)
        except (harness.ConnectionClosed, BrokenPipeError, ConnectionResetError):
            pass
        idle.close()

        try:
            code = veer.proc.wait(12)
        except Exception:
            self.fail("veer still running 12 s after SIGTERM with drain_timeout 10s")
        took = time.time() - t0
        self.assertEqual(code, 0, "exit code after SIGTERM drain")
        self.assertLess(took, 5.0, "veer took %.1fs to exit once its 1.5 s requests were done" % took)

    def test_drain_timeout_bounds_shutdown(self):
        veer = Veer(standard_config(drain_timeout="2s", rest_timeout="60s"))
        c = RawConn(veer.port, timeout=10)
        self.addCleanup(c.close)
        c.send(req("/slow?ms=20000"))
        time.sleep(0.3)
        t0 = time.time()
        veer.signal(signal.SIGTERM)
        try:
            code = veer.proc.wait(10 * harness.SLOW)
        except Exception:
            self.fail("veer ignored drain_timeout 2s with a 20 s request in flight")
        took = time.time() - t0
        self.assertEqual(code, 0)
        self.assertGreater(took, 1.5, "veer cut an in-flight request before drain_timeout (%.2fs)" % took)
        self.assertLess(took, 2.0 + 2.0 * harness.SLOW, "exit %.2fs after SIGTERM with drain_timeout 2s" % took)
        c.close()

    def test_idle_shutdown_is_quick(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            with self.subTest(sig=sig.name):
                veer = Veer(standard_config())
                st, _, _ = veer.request("GET", "/status/200")
                self.assertEqual(st, 200)
                t0 = time.time()
                veer.signal(sig)
                code = veer.proc.wait(10 * harness.SLOW)
                self.assertEqual(code, 0)
                self.assertLess(time.time() - t0, 2.0 * harness.SLOW)

    def test_admin_drain(self):
        veer = Veer(standard_config(drain_timeout="5s"))
        st, js = veer.admin("POST", "/v1/drain")
        self.assertIn(st, (200, 202), js)
        try:
            harness.wait_until(lambda: veer.admin("GET", "/readyz", timeout=1)[0] == 503, 1.0,
                               what="/readyz 503 after POST /v1/drain")
        except (OSError, http.client.HTTPException):
            self.assertIsNotNone(veer.proc.poll(), "admin stopped answering but veer still runs")
        veer.stop()


if __name__ == "__main__":
    harness.main()
