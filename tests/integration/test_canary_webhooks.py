"""Canary webhooks: every phase change POSTs the run's JSON to the
phase_change URLs (and promoted/rolled_back to theirs); confirm_promotion
answering 500 holds the promotion, 200 lets it through; a webhook that hangs
delays neither requests nor the admin API, and a failing one is retried."""

import http.server
import json
import os
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import SLOW, Veer, base_config, wait_until  # noqa: E402
from test_canary import Load, canary, wait_phase  # noqa: E402

PODS = {}


class Recorder:
    """A tiny HTTP server on loopback: records every POST (path, JSON body);
    /confirm answers self.confirm_status, /hang answers after 3 s, /flaky
    fails its first two calls."""

    def __init__(self):
        self.calls = []
        self.lock = threading.Lock()
        self.confirm_status = 500
        self.flaky_left = 2
        rec = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                n = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(n)
                try:
                    doc = json.loads(body)
                except ValueError:
                    doc = None
                with rec.lock:
                    rec.calls.append((self.path, doc, time.time()))
                    status = 200
                    if self.path == "/confirm":
                        status = rec.confirm_status
                    elif self.path == "/flaky" and rec.flaky_left > 0:
                        rec.flaky_left -= 1
                        status = 503
                if self.path == "/hang":
                    time.sleep(3)
                try:
                    self.send_response(status)
                    self.send_header("content-length", "0")
                    self.end_headers()
                except OSError:
                    pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def posts(self, path):
        with self.lock:
            return [c for c in self.calls if c[0] == path]

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def setUpModule():
    harness.start_pods(PODS, ("blue-1", "green-1"))


def config():
    clusters = {"blue": [PODS["blue-1"].addr], "green": [PODS["green-1"].addr]}
    routes = [{"name": "embed", "match": {"path_prefix": "/api/v1/embed"},
               "split": [{"cluster": "blue", "weight": 100}, {"cluster": "green", "weight": 0}]}]
    return base_config(clusters, routes)


def policy(webhooks, **over):
    p = {"stable": "blue", "canary": "green", "interval": "300ms", "step_weight": 50, "max_weight": 50,
         "min_requests": 3, "threshold": 2, "success_rate_min": 95, "p99_max": "300ms", "webhooks": webhooks}
    p.update(over)
    return p


class WebhookTest(unittest.TestCase):
    def setUp(self):
        for p in PODS.values():
            p.fault(error_rate=0, latency="0ms", latency_p99="0ms")
        self.rec = Recorder()
        self.v = Veer(config())
        self.load = Load(self.v.port)

    def tearDown(self):
        self.load.stop()
        self.v.stop()
        self.rec.stop()

    def test_phase_changes_are_posted_and_confirmation_gates_promotion(self):
        v, rec = self.v, self.rec
        hooks = {"phase_change": [rec.url("/phase")], "promoted": rec.url("/promoted"),
                 "confirm_promotion": rec.url("/confirm"), "timeout": "1s", "retries": 0}
        st, js = v.admin("POST", "/v1/routes/embed/canary", policy(hooks))
        self.assertEqual(st, 200, js)
        wait_until(lambda: len(rec.posts("/confirm")) >= 3, 8 * SLOW, what="confirm_promotion asked 3 times")
        run = canary(v)
        self.assertNotEqual(run["phase"], "succeeded", "promoted although confirm_promotion answered 500")
        self.assertEqual(v.weights("embed"), {"blue": 50, "green": 50})
        rec.confirm_status = 200
        run = wait_phase(v, "succeeded", 8)
        self.assertEqual(v.weights("embed"), {"blue": 0, "green": 100})
        wait_until(lambda: rec.posts("/promoted"), 3 * SLOW, what="the promoted webhook")
        phases = [c[1]["phase"] for c in rec.posts("/phase")]
        self.assertEqual(phases[0], "progressing")
        self.assertEqual(phases[-1], "succeeded")
        body = rec.posts("/promoted")[0][1]
        self.assertEqual((body["route"], body["phase"], body["canary"]), ("embed", "succeeded", "green"))
        self.assertIn("events", body)

    def test_rollback_hook_hung_hook_and_retries(self):
        v, rec = self.v, self.rec
        hooks = {"phase_change": [rec.url("/hang"), rec.url("/flaky")], "rolled_back": rec.url("/rolled"),
                 "timeout": "2s", "retries": 3}
        st, js = v.admin("POST", "/v1/routes/embed/canary", policy(hooks, max_weight=100, step_weight=10))
        self.assertEqual(st, 200, js)
        wait_until(lambda: rec.posts("/hang"), 3 * SLOW, what="the hanging webhook called")
        # while /hang holds its call open, requests and the admin API answer at once
        t0 = time.time()
        for _ in range(20):
            st, _, _ = v.request("POST", "/api/v1/embed", harness.EMBED_BODY, {"content-type": "application/json"})
            self.assertEqual(st, 200)
        self.assertLess(time.time() - t0, 2.0 * SLOW)
        t0 = time.time()
        canary(v)
        self.assertLess(time.time() - t0, 0.5 * SLOW)
        PODS["green-1"].fault(error_rate=0.6)
        wait_phase(v, "rolled_back", 8)
        wait_until(lambda: rec.posts("/rolled"), 3 * SLOW, what="the rolled_back webhook")
        self.assertEqual(rec.posts("/rolled")[0][1]["phase"], "rolled_back")
        # /flaky failed twice for the start's POST, then took the retries
        wait_until(lambda: len(rec.posts("/flaky")) >= 4, 5 * SLOW, what="flaky retried")
        self.assertEqual([c[1]["phase"] for c in rec.posts("/flaky")][-1], "rolled_back")


if __name__ == "__main__":
    harness.main()
