"""A canary run's mirrored phase (mirror_iterations): while it lasts every
user response comes from the stable pod and the canary's live weight stays 0,
yet the canary pod receives a copy of each request (x-veer-mirror: 1), body
included, and its outcome feeds the analysis: a healthy canary leaves the
mirror and progresses, one answering 503 or hanging is rolled back from the
mirror, without users seeing an error or a slower response. A body is copied
once it is complete, with its Content-Length (chunked or not), up to 1 MiB;
larger ones are counted in veer_mirror_dropped_total{reason="body_too_large"}
and with mirroring off nothing of a body is kept. Copies speak the canary
cluster's protocol: gRPC calls over h2c (a failing grpc-status counts as the
copy's failure) and HTTP/1.1 or HTTP/2 behind TLS."""

import http.client
import json
import os
import re
import socket
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import SLOW, RssSampler, Veer, base_config, do_request, wait_until  # noqa: E402

PODS = {}
POD_NAMES = ("blue-m", "canary-m")


def setUpModule():
    harness.start_pods(PODS, POD_NAMES)


def config():
    clusters = {"blue": [PODS["blue-m"].addr], "canary": [PODS["canary-m"].addr]}
    routes = [{"name": "web", "match": {"path_prefix": "/"}, "timeout": "400ms",
               "split": [{"cluster": "blue", "weight": 100}, {"cluster": "canary", "weight": 0}]}]
    return base_config(clusters, routes)


def policy(**over):
    p = {"stable": "blue", "canary": "canary", "interval": "300ms", "step_weight": 25, "max_weight": 50,
         "min_requests": 5, "threshold": 2, "success_rate_min": 95, "p99_max": "300ms",
         "compare_to_stable": False, "max_inconclusive": 20, "mirror_iterations": 3}
    p.update(over)
    return p


EMBED = {"text": "a mirrored embedding request", "model": "mini"}
EMBED_BYTES = json.dumps(EMBED).encode()


def chunks(total, size=65536, fill=b"c"):
    """A chunked request body: an iterator of pieces of `total` bytes in all."""
    left = total
    while left > 0:
        n = min(size, left)
        left -= n
        yield fill * n


def post_chunked(v, path, body_iter):
    c = http.client.HTTPConnection("127.0.0.1", v.port, timeout=30)
    try:
        c.request("POST", path, body=body_iter, encode_chunked=True)
        r = c.getresponse()
        return r.status, {k.lower(): val for k, val in r.getheaders()}, r.read()
    finally:
        c.close()


metric = harness.metric


class Users:
    """Sequential GETs on one keep-alive connection, each timed."""

    def __init__(self, v):
        self.v = v
        self.conn = http.client.HTTPConnection("127.0.0.1", v.port, timeout=10)
        self.results = []  # (status, x-pod, seconds)
        self.bodies = []  # of embed()

    def one(self, path="/headers"):
        t0 = time.monotonic()
        st, hd, _ = do_request(self.conn, "GET", path)
        self.results.append((st, hd.get("x-pod"), time.monotonic() - t0))

    def embed(self):
        """A POST /api/v1/embed with a JSON body; its answer must be the stable pod's."""
        t0 = time.monotonic()
        st, hd, data = do_request(self.conn, "POST", "/api/v1/embed", EMBED)
        self.results.append((st, hd.get("x-pod"), time.monotonic() - t0))
        self.bodies.append(data)

    def close(self):
        self.conn.close()


class MirrorTest(unittest.TestCase):
    def setUp(self):
        for p in PODS.values():
            p.fault(error_rate=0, hang_rate=0, latency="0ms", latency_p99="0ms")
            p.reset_stats()
        env = None
        if harness.ASAN:  # freed memory in a bounded quarantine, so RSS tells what is kept
            opts = os.environ.get("ASAN_OPTIONS", "")
            env = {"ASAN_OPTIONS": (opts + ":" if opts else "") + "quarantine_size_mb=16:thread_local_quarantine_size_kb=256"}
        self.v = Veer(config(), env=env)
        self.users = Users(self.v)

    def tearDown(self):
        self.users.close()
        self.v.stop()

    def run_json(self):
        st, js = self.v.admin("GET", "/v1/routes/web/canary")
        self.assertEqual(st, 200, js)
        return js

    def start_run(self, **over):
        st, js = self.v.admin("POST", "/v1/routes/web/canary", policy(**over))
        self.assertEqual(st, 200, js)
        self.assertEqual(js["stage"], "mirror", js)
        self.assertEqual(js["weight"], 0, js)
        return js

    def drive_until(self, pred, timeout, what, send=None):
        """Send user requests until pred(run) holds; returns that run.
        self.in_mirror: how many of the results were answered while the run
        was still mirrored (checked after each batch of 5)."""
        deadline = time.monotonic() + timeout * SLOW
        self.in_mirror = 0
        while time.monotonic() < deadline:
            for _ in range(5):
                (send or self.users.one)()
                time.sleep(0.002)
            run = self.run_json()
            if run["stage"] == "mirror":
                self.in_mirror = len(self.users.results)
            if pred(run):
                return run
        self.fail("%s never happened; last run: %s" % (what, self.run_json()))

    def assert_users_unaffected(self, bound_s):
        self.assertTrue(self.users.results)
        self.assertEqual({(st, pod) for st, pod, _ in self.users.results}, {(200, "blue-m")})
        slowest = max(d for _, _, d in self.users.results)
        self.assertLess(slowest, bound_s * SLOW, "a user waited %.3fs" % slowest)

    def test_each_request_is_copied_while_users_stay_on_stable(self):
        self.start_run(mirror_iterations=1000)  # stays mirrored for the whole test
        for _ in range(100):
            self.users.one()
            time.sleep(0.002)  # a pace the copies keep up with, far below the cap of 64 in flight
        self.assert_users_unaffected(0.3)
        # every request is either copied or, on a loaded machine, dropped at the cap and counted
        dropped = metric(self.v, "veer_mirror_dropped_total", '{reason="in_flight_cap"}')
        sent = metric(self.v, "veer_mirror_requests_total")
        self.assertEqual(sent + dropped, 100)
        self.assertGreaterEqual(sent, 50)
        wait_until(lambda: PODS["canary-m"].stats()["requests_total"] >= sent, 5 * SLOW,
                   what="%d copies (dropped %d, failed %s)" % (sent, dropped, metric(self.v, "veer_mirror_failed_total")))
        time.sleep(0.2)
        self.assertEqual(PODS["canary-m"].stats()["requests_total"], sent)
        self.assertEqual(PODS["blue-m"].stats()["requests_total"], 100)
        self.assertEqual(metric(self.v, "veer_mirror_failed_total"), 0)
        run = self.run_json()
        self.assertEqual((run["stage"], run["weight"]), ("mirror", 0))
        self.assertEqual(self.v.weights("web"), {"blue": 100, "canary": 0})
        # the canary's stats on the route see the copies, for the analysis
        def copies_analysed():
            return sum(e["analysis"]["canary"]["requests"] for e in self.run_json()["events"]
                       if e["kind"] == "iteration")
        wait_until(lambda: copies_analysed() > 0, 3 * SLOW, what="an analysis of the copies")
        self.assertLessEqual(copies_analysed(), 100)
        # a request with a body is copied with its body
        before = PODS["canary-m"].stats()["bytes_received"]
        st, hd, _ = self.v.request("POST", "/echo", b"x" * 100)
        self.assertEqual((st, hd.get("x-pod"), hd.get("x-echo-bytes")), (200, "blue-m", "100"))
        wait_until(lambda: PODS["canary-m"].stats()["requests_total"] == sent + 1, 3 * SLOW, what="the body's copy")
        self.assertEqual(PODS["canary-m"].stats()["bytes_received"] - before, 100)
        self.assertEqual(metric(self.v, "veer_mirror_dropped_total", '{reason="body_too_large"}'), 0)
        # the copy carries x-veer-mirror: 1 and the user's authority
        PODS["canary-m"].reset_stats()
        st, hd, body = self.v.request("GET", "/headers", headers={"host": "shop.example"})
        self.assertEqual((st, hd.get("x-pod")), (200, "blue-m"))
        self.assertNotIn(b"x-veer-mirror", body.lower())  # users never see it
        st, _ = self.v.admin("POST", "/v1/routes/web/canary/abort")
        self.assertEqual(st, 200)

    def test_healthy_canary_leaves_the_mirror_and_progresses(self):
        self.start_run()
        run = self.drive_until(lambda r: r["stage"] != "mirror", 10, "leaving the mirror")
        mirrored = self.users.results[:self.in_mirror]
        self.assertGreater(len(mirrored), 0)
        self.assertEqual(run["phase"], "progressing", run)
        kinds = [e["kind"] for e in run["events"]]
        # the third passing mirrored analysis is the one that makes it live
        self.assertEqual(kinds[:4], ["started", "iteration", "iteration", "live"], kinds)
        self.assertEqual(run["events"][3]["analysis"]["verdict"], "pass", run["events"][3])
        self.assertGreater(run["events"][3]["analysis"]["canary"]["requests"], 0, run["events"][3])
        self.assertEqual({(st, pod) for st, pod, _ in mirrored}, {(200, "blue-m")})
        # each of them was copied or, on a loaded machine, dropped at the cap and counted
        sent = metric(self.v, "veer_mirror_requests_total")
        dropped = metric(self.v, "veer_mirror_dropped_total", '{reason="in_flight_cap"}')
        self.assertGreaterEqual(sent + dropped, len(mirrored))
        self.assertGreaterEqual(sent, len(mirrored) / 2)
        wait_until(lambda: PODS["canary-m"].stats()["requests_total"] >= sent, 5 * SLOW, what="the copies")
        run = self.drive_until(lambda r: r["weight"] > 0, 10, "a live weight")
        self.assertEqual(run["mirror"], False)
        self.assertEqual(self.v.weights("web")["canary"], run["weight"])
        self.users.results.clear()
        for _ in range(40):
            self.users.one()
        self.assertIn("canary-m", {pod for _, pod, _ in self.users.results})  # now live
        before = metric(self.v, "veer_mirror_requests_total")
        for _ in range(20):
            self.users.one()
        self.assertEqual(metric(self.v, "veer_mirror_requests_total"), before)  # no copies after the mirror
        self.v.admin("POST", "/v1/routes/web/canary/abort")

    def test_post_only_load_passes_the_mirrored_phase(self):
        # before bodies were copied, a POST-only workload left the canary without samples: inconclusive
        self.start_run()
        run = self.drive_until(lambda r: r["stage"] != "mirror", 10, "leaving the mirror", send=self.users.embed)
        self.assertEqual(run["phase"], "progressing", run)
        kinds = [e["kind"] for e in run["events"]]
        self.assertEqual(kinds[:4], ["started", "iteration", "iteration", "live"], kinds)
        self.assertGreater(run["events"][3]["analysis"]["canary"]["requests"], 0, run["events"][3])
        mirrored = self.users.results[:self.in_mirror]
        self.assertEqual({(st, pod) for st, pod, _ in mirrored}, {(200, "blue-m")})
        # users got the stable pod's answer, byte for byte
        st, direct = PODS["blue-m"].request("POST", "/api/v1/embed", EMBED_BYTES)
        self.assertEqual(st, 200)
        self.assertEqual(set(self.users.bodies[:self.in_mirror]), {direct})
        # every copy reached the canary pod with the whole body
        sent = metric(self.v, "veer_mirror_requests_total")
        self.assertGreaterEqual(sent, len(mirrored) / 2)
        self.assertEqual(metric(self.v, "veer_mirror_dropped_total", '{reason="incomplete"}'), 0)
        self.assertEqual(metric(self.v, "veer_mirror_dropped_total", '{reason="body_too_large"}'), 0)
        live = sum(1 for _, pod, _ in self.users.results if pod == "canary-m")  # users once it went live
        wait_until(lambda: PODS["canary-m"].stats()["bytes_received"] == (sent + live) * len(EMBED_BYTES), 5 * SLOW,
                   what="the copies' bodies")
        self.v.admin("POST", "/v1/routes/web/canary/abort")

    def upload_5x10mib_within(self, growth_limit_kb):
        """5 chunked uploads of 10 MiB (limits.max_body_bytes is 16 MiB), each
        answered by the stable pod, while veer's RSS grows by less than this."""
        base = self.v.rss_kb()
        with RssSampler(self.v) as rss:
            for _ in range(5):
                st, hd, _ = post_chunked(self.v, "/sink", chunks(10 * 1024 * 1024))
                self.assertEqual((st, hd.get("x-pod")), (200, "blue-m"))
        self.assertLess(rss.peak() - base, growth_limit_kb, "RSS grew by %d kB" % (rss.peak() - base))

    def test_without_mirroring_no_body_is_kept(self):
        # no run: 50 MiB of chunked uploads stream through without anything kept for a copy
        growth_limit_kb = (32 if harness.ASAN else 16) * 1024
        post_chunked(self.v, "/sink", chunks(4 * 1024 * 1024))  # steady-state buffers before the baseline
        self.upload_5x10mib_within(growth_limit_kb)
        for reason in ("body_too_large", "incomplete", "in_flight_cap"):
            self.assertEqual(metric(self.v, "veer_mirror_dropped_total", '{reason="%s"}' % reason), 0)
        self.assertEqual(metric(self.v, "veer_mirror_requests_total"), 0)
        # mirrored: each upload keeps at most 1 MiB, then drops its copy
        self.start_run(mirror_iterations=1000)
        self.upload_5x10mib_within(growth_limit_kb)
        self.assertEqual(metric(self.v, "veer_mirror_dropped_total", '{reason="body_too_large"}'), 5)
        self.assertEqual(metric(self.v, "veer_mirror_requests_total"), 0)
        self.v.admin("POST", "/v1/routes/web/canary/abort")

    def rolled_back_from_mirror(self, **fault):
        PODS["canary-m"].fault(**fault)
        self.start_run()
        run = self.drive_until(lambda r: r["phase"] != "progressing" or r["stage"] != "mirror", 10,
                               "the end of the mirror")
        self.assertEqual(run["phase"], "rolled_back", run)
        kinds = [e["kind"] for e in run["events"]]
        self.assertNotIn("live", kinds)
        self.assertEqual(self.v.weights("web"), {"blue": 100, "canary": 0})
        self.assertGreater(PODS["canary-m"].stats()["requests_total"], 0)
        self.assertGreater(metric(self.v, "veer_mirror_failed_total"), 0)
        return run

    def test_failing_canary_is_rolled_back_from_the_mirror_and_users_never_see_it(self):
        self.rolled_back_from_mirror(error_rate=1)
        self.assert_users_unaffected(0.3)

    def test_hanging_canary_neither_slows_users_nor_survives(self):
        self.rolled_back_from_mirror(hang_rate=1)
        # every copy hangs until the route timeout (400ms): users still answered at once
        self.assert_users_unaffected(0.3)
        self.assertGreater(metric(self.v, "veer_mirror_requests_total"), 0)
        # copies hang until the timeout, so the per-worker cap of 64 in flight is hit and counted
        self.assertGreater(metric(self.v, "veer_mirror_dropped_total", '{reason="in_flight_cap"}'), 0)


class Capture(threading.Thread):
    """An HTTP/1.1 server that keeps each request it receives: (head, body),
    the body read by its Content-Length (a chunked copy is kept undecoded)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.addr = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.heads = []
        self.bodies = []
        self.start()

    def run(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = c.recv(65536)
                if not chunk:
                    break
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            m = re.search(rb"^content-length:\s*(\d+)", head, re.M | re.I)
            want = int(m.group(1)) if m else 0
            while len(body) < want:
                chunk = c.recv(65536)
                if not chunk:
                    break
                body += chunk
            self.bodies.append(body)
            self.heads.append(head.decode("latin-1"))
            c.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
            c.close()


def mirrored_to_capture(test):
    """veer with route web on blue-m and a Capture as its canary, in a
    mirrored phase that outlasts the test; both stopped at the test's end."""
    cap = Capture()
    test.addCleanup(cap.sock.close)
    clusters = {"blue": [PODS["blue-m"].addr], "canary": [cap.addr]}
    routes = [{"name": "web", "match": {"path_prefix": "/"},
               "split": [{"cluster": "blue", "weight": 100}, {"cluster": "canary", "weight": 0}]}]
    v = Veer(base_config(clusters, routes))
    test.addCleanup(v.stop)
    st, js = v.admin("POST", "/v1/routes/web/canary", policy(mirror_iterations=1000, interval="5s"))
    test.assertEqual(st, 200, js)
    return v, cap


class MirrorCopyTest(unittest.TestCase):
    def test_copy_has_the_users_method_path_headers_and_x_veer_mirror(self):
        v, cap = mirrored_to_capture(self)
        st, hd, _ = v.request("GET", "/headers?q=1", headers={"host": "shop.example", "x-user": "u1"})
        self.assertEqual((st, hd.get("x-pod")), (200, "blue-m"))
        wait_until(lambda: cap.heads, 5 * SLOW, what="the copy")
        self.assertEqual(cap.heads[0].split("\r\n")[0], "GET /headers?q=1 HTTP/1.1")
        fields = fields_of(cap.heads[0])
        self.assertEqual(fields.get("host"), "shop.example")
        self.assertEqual(fields.get("x-user"), "u1")
        self.assertEqual(fields.get("x-veer-mirror"), "1")
        wait_until(lambda: metric(v, "veer_mirror_requests_total") == 1, 3 * SLOW, what="the count")
        self.assertEqual(metric(v, "veer_mirror_failed_total"), 0)


def fields_of(head):
    fields = {}
    for ln in head.split("\r\n")[1:]:
        k, _, val = ln.partition(":")
        fields[k.strip().lower()] = val.strip()
    return fields


class MirrorBodyTest(unittest.TestCase):
    def test_bodies_are_copied_whole_up_to_1_mib(self):
        v, cap = mirrored_to_capture(self)
        # JSON embeds: the user gets the stable pod's answer, the canary the same body bytes
        sent = [{"text": "first"}, {"text": "second", "model": "mini"}, {"text": "x" * 5000}]
        conn = http.client.HTTPConnection("127.0.0.1", v.port, timeout=10)
        for doc in sent:
            st, hd, data = do_request(conn, "POST", "/api/v1/embed", doc)
            self.assertEqual((st, hd.get("x-pod")), (200, "blue-m"))
            self.assertEqual((200, data), PODS["blue-m"].request("POST", "/api/v1/embed", doc))
        conn.close()
        wait_until(lambda: len(cap.bodies) == 3, 5 * SLOW, what="the copies")
        for i, doc in enumerate(sent):
            lines = cap.heads[i].split("\r\n")
            self.assertEqual(lines[0], "POST /api/v1/embed HTTP/1.1")
            f = fields_of(cap.heads[i])
            self.assertEqual(cap.bodies[i], json.dumps(doc).encode())
            self.assertEqual(f.get("content-length"), str(len(cap.bodies[i])))
            self.assertEqual(f.get("content-type"), "application/json")
            self.assertEqual(f.get("x-veer-mirror"), "1")
        # a chunked body is copied with the Content-Length of what was received
        st, hd, data = post_chunked(v, "/echo", chunks(70000, 7000, b"k"))
        self.assertEqual((st, hd.get("x-pod"), hd.get("x-echo-bytes")), (200, "blue-m", "70000"))
        wait_until(lambda: len(cap.bodies) == 4, 5 * SLOW, what="the chunked copy")
        f = fields_of(cap.heads[3])
        self.assertEqual((f.get("content-length"), f.get("transfer-encoding")), ("70000", None))
        self.assertEqual(cap.bodies[3], b"k" * 70000)
        # over 1 MiB, announced or chunked: not copied, counted; the user is served as ever
        big = 1024 * 1024 + 1
        st, hd, _ = v.request("POST", "/echo", b"b" * big)
        self.assertEqual((st, hd.get("x-pod"), hd.get("x-echo-bytes")), (200, "blue-m", str(big)))
        st, hd, _ = post_chunked(v, "/echo", chunks(big, 65536, b"d"))
        self.assertEqual((st, hd.get("x-pod"), hd.get("x-echo-bytes")), (200, "blue-m", str(big)))
        self.assertEqual(metric(v, "veer_mirror_dropped_total", '{reason="body_too_large"}'), 2)
        # exactly 1 MiB still goes
        st, hd, _ = v.request("POST", "/echo", b"e" * (big - 1))
        self.assertEqual(st, 200)
        wait_until(lambda: len(cap.bodies) == 5, 5 * SLOW, what="the 1 MiB copy")
        self.assertEqual(cap.bodies[4], b"e" * (big - 1))
        time.sleep(0.2)
        self.assertEqual(len(cap.bodies), 5)
        wait_until(lambda: metric(v, "veer_mirror_requests_total") == 5, 3 * SLOW, what="the count")
        self.assertEqual(metric(v, "veer_mirror_failed_total"), 0)
        self.assertEqual(metric(v, "veer_mirror_dropped_total", '{reason="incomplete"}'), 0)

    def test_a_body_cut_by_the_client_is_not_copied(self):
        v, cap = mirrored_to_capture(self)
        s = socket.create_connection(("127.0.0.1", v.port))
        s.sendall(b"POST /echo HTTP/1.1\r\nhost: a\r\ncontent-length: 1000\r\n\r\n" + b"z" * 400)
        time.sleep(0.1)
        s.close()
        wait_until(lambda: metric(v, "veer_mirror_dropped_total", '{reason="incomplete"}') == 1, 3 * SLOW,
                   what="the incomplete count")
        time.sleep(0.2)
        self.assertEqual(cap.bodies, [])
        self.assertEqual(metric(v, "veer_mirror_requests_total"), 0)


class MirrorH2Test(unittest.TestCase):
    """The gRPC embedding service over h2c: its canary's copies go over
    HTTP/2 too (one h2c connection per copy), gRPC failures by the route's
    failure_grpc_status included."""

    def setUp(self):
        import test_grpc
        if test_grpc.h2 is None:
            raise AssertionError("python3-h2 is missing (apt-get install -y python3-h2)")
        self.g = test_grpc
        self.blue, self.canary = harness.pods_for_test(self, "blue-g", "canary-g")
        clusters = {"blue": {"endpoints": [self.blue.addr], "protocol": "h2c"},
                    "canary": {"endpoints": [self.canary.addr], "protocol": "h2c"}}
        routes = [{"name": "grpc", "match": {"path_prefix": "/akidb.v1.Embed/"}, "timeout": "400ms",
                   "split": [{"cluster": "blue", "weight": 100}, {"cluster": "canary", "weight": 0}]}]
        self.v = Veer(base_config(clusters, routes))
        self.addCleanup(self.v.stop)
        self.calls = []
        self.in_mirror = 0

    def batch(self, n=5, headers=None):
        frames = [self.g.grpc_frame(b"embed me %d" % i) for i in range(n)]
        calls = self.g.h2_calls(self.v.port, [(self.g.EMBED, headers or self.g.GRPC_HEADERS, f) for f in frames])
        self.calls.extend(zip(frames, calls))

    def drive_until(self, pred, timeout, what):
        deadline = time.monotonic() + timeout * SLOW
        while time.monotonic() < deadline:
            self.batch()
            time.sleep(0.01)
            st, run = self.v.admin("GET", "/v1/routes/grpc/canary")
            self.assertEqual(st, 200, run)
            if run["stage"] == "mirror":
                self.in_mirror = len(self.calls)
            if pred(run):
                return run
        self.fail("%s never happened; last run: %s" % (what, self.v.admin("GET", "/v1/routes/grpc/canary")[1]))

    def start_run(self, **over):
        st, js = self.v.admin("POST", "/v1/routes/grpc/canary", policy(**over))
        self.assertEqual(st, 200, js)
        self.assertEqual(js["stage"], "mirror", js)

    def assert_users_got_stable_answers(self, calls):
        self.assertTrue(calls)
        for frame, c in calls:
            self.assertIsNone(c.reset)
            self.assertEqual((c.headers.get(":status"), c.headers.get("x-pod"), c.status()), ("200", "blue-g", 0))
            direct = self.g.h2_call(self.blue.port, self.g.EMBED, body=frame)
            self.assertEqual(c.data, direct.data)

    def test_grpc_calls_are_copied_over_h2c_and_pass_the_mirror(self):
        self.start_run()
        run = self.drive_until(lambda r: r["stage"] != "mirror", 10, "leaving the mirror")
        self.assertEqual(run["phase"], "progressing", run)
        kinds = [e["kind"] for e in run["events"]]
        self.assertEqual(kinds[:4], ["started", "iteration", "iteration", "live"], kinds)
        self.assertGreater(run["events"][3]["analysis"]["canary"]["requests"], 0, run["events"][3])
        self.assert_users_got_stable_answers(self.calls[:self.in_mirror][:10])
        self.assertEqual({c.headers.get("x-pod") for _, c in self.calls[:self.in_mirror]}, {"blue-g"})
        sent = metric(self.v, "veer_mirror_requests_total")
        self.assertGreaterEqual(sent, self.in_mirror / 2)
        live = sum(1 for _, c in self.calls if c.headers.get("x-pod") == "canary-g")
        # the copies reached the canary pod as gRPC calls over HTTP/2, bodies whole
        wait_until(lambda: self.canary.stats()["requests_by_path"]["/akidb.v1.Embed/Embed"] == sent + live,
                   5 * SLOW, what="%d copies and %d live calls" % (sent, live))
        st = self.canary.stats()
        self.assertGreaterEqual(st["h2_connections_total"], sent)  # one connection per copy
        self.assertEqual(st["grpc_errors_injected"], 0)
        self.assertEqual(metric(self.v, "veer_mirror_failed_total"), 0)
        self.assertIsNone(metric(self.v, "veer_mirror_dropped_total", '{reason="protocol"}'))
        for reason in ("incomplete", "body_too_large", "too_many_headers", "no_endpoint"):
            self.assertEqual(metric(self.v, "veer_mirror_dropped_total", '{reason="%s"}' % reason), 0, reason)
        self.v.admin("POST", "/v1/routes/grpc/canary/abort")

    def test_failing_grpc_canary_is_rolled_back_and_users_never_see_it(self):
        self.canary.fault(grpc_error_rate=1.0)  # HTTP 200 with grpc-status 13: a failure by failure_grpc_status
        self.start_run()
        run = self.drive_until(lambda r: r["phase"] != "progressing" or r["stage"] != "mirror", 10,
                               "the end of the mirror")
        self.assertEqual(run["phase"], "rolled_back", run)
        self.assertNotIn("live", [e["kind"] for e in run["events"]])
        self.assertEqual(self.v.weights("grpc"), {"blue": 100, "canary": 0})
        self.assertGreater(self.canary.stats()["grpc_errors_injected"], 0)
        self.assertGreater(metric(self.v, "veer_mirror_failed_total"), 0)
        self.assertEqual({(c.reset, c.headers.get("x-pod"), c.status()) for _, c in self.calls},
                         {(None, "blue-g", 0)})

    def test_a_call_with_more_headers_than_a_copy_takes_is_dropped_and_counted(self):
        self.start_run(mirror_iterations=1000, interval="5s")
        many = self.g.GRPC_HEADERS + [("x-h%d" % i, "v") for i in range(40)]
        self.batch(n=1, headers=many)
        self.batch(n=1)
        self.assertEqual({(c.headers.get("x-pod"), c.status()) for _, c in self.calls}, {("blue-g", 0)})
        self.assertEqual(metric(self.v, "veer_mirror_dropped_total", '{reason="too_many_headers"}'), 1)
        wait_until(lambda: self.canary.stats()["requests_total"] == 1, 3 * SLOW, what="the other copy")
        self.assertEqual(metric(self.v, "veer_mirror_requests_total"), 1)
        self.v.admin("POST", "/v1/routes/grpc/canary/abort")

    def test_grpc_calls_are_copied_to_an_h2_canary_behind_tls(self):
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from test_health import tls_pki
        test_tls = tls_pki("mirror-ca", "mirror-server", 0x7107)
        port = harness.free_port()
        cfg = os.path.join(harness.TMP, "haproxy-h2-%d.cfg" % port)
        with open(cfg, "w") as f:  # TLS with ALPN h2 in front of the pod's h2c
            f.write("global\n  maxconn 256\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 30s\n"
                    "  timeout server 30s\nfrontend fe\n  bind 127.0.0.1:%d ssl crt %s alpn h2\n"
                    "  default_backend be\nbackend be\n  server pod %s proto h2\n"
                    % (port, test_tls.p("mirror-server.both.pem"), self.canary.addr))
        proc, _, err = harness.spawn(["haproxy", "-db", "-f", cfg], "haproxy-h2-%d" % port)
        self.addCleanup(harness.kill, proc)

        def listening():
            if proc.poll() is not None:
                raise AssertionError("haproxy exited: %s" % harness.tail(err))
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                return False
        wait_until(listening, 10 * SLOW, what="haproxy")
        self.v.stop()
        clusters = {"blue": {"endpoints": [self.blue.addr], "protocol": "h2c"},
                    "canary": {"endpoints": ["127.0.0.1:%d" % port], "protocol": "h2",
                               "tls": {"ca": test_tls.p("mirror-ca.pem")}}}
        routes = [{"name": "grpc", "match": {"path_prefix": "/akidb.v1.Embed/"}, "timeout": "2s",
                   "split": [{"cluster": "blue", "weight": 100}, {"cluster": "canary", "weight": 0}]}]
        self.v = Veer(base_config(clusters, routes))
        self.addCleanup(self.v.stop)
        self.start_run(mirror_iterations=1000, interval="5s")
        self.batch(n=5)
        self.assert_users_got_stable_answers(self.calls)
        wait_until(lambda: metric(self.v, "veer_mirror_requests_total") == 5, 3 * SLOW, what="the copies sent")
        wait_until(lambda: self.canary.stats()["requests_by_path"]["/akidb.v1.Embed/Embed"] == 5, 5 * SLOW,
                   what="the copies through TLS")
        time.sleep(0.3)  # the copies' answers are back by now: a failure would have been counted
        self.assertEqual(metric(self.v, "veer_mirror_failed_total"), 0)
        self.v.admin("POST", "/v1/routes/grpc/canary/abort")


class MirrorTlsTest(unittest.TestCase):
    """A canary cluster behind TLS (HTTP/1.1): copies go over TLS with the
    cluster's CA, like its user traffic."""

    def test_tls_canary_receives_copies_and_passes_the_mirror(self):
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from test_health import tls_pki
        test_tls = tls_pki("mirror-ca", "mirror-server", 0x7107)
        blue, canary = harness.pods_for_test(self, "blue-t", "canary-t")
        hp = test_tls.HAProxy(canary.addr, cert="mirror-server")
        self.addCleanup(harness.kill, hp.proc)
        clusters = {"blue": [blue.addr], "canary": {"endpoints": [hp.addr], "tls": {"ca": test_tls.p("mirror-ca.pem")}}}
        routes = [{"name": "web", "match": {"path_prefix": "/"}, "timeout": "400ms",
                   "split": [{"cluster": "blue", "weight": 100}, {"cluster": "canary", "weight": 0}]}]
        v = Veer(base_config(clusters, routes))
        self.addCleanup(v.stop)
        st, js = v.admin("POST", "/v1/routes/web/canary", policy())
        self.assertEqual((st, js.get("stage")), (200, "mirror"), js)
        conn = http.client.HTTPConnection("127.0.0.1", v.port, timeout=10)
        self.addCleanup(conn.close)
        results, in_mirror = [], 0
        deadline = time.monotonic() + 10 * SLOW
        while True:
            self.assertLess(time.monotonic(), deadline, "the TLS canary never left the mirror")
            for _ in range(5):
                st, hd, _ = do_request(conn, "POST", "/api/v1/embed", EMBED)
                results.append((st, hd.get("x-pod")))
            run = v.admin("GET", "/v1/routes/web/canary")[1]
            if run["stage"] == "mirror":
                in_mirror = len(results)
            else:
                break
        self.assertEqual(run["phase"], "progressing", run)
        self.assertGreater(in_mirror, 0)
        self.assertEqual(set(results[:in_mirror]), {(200, "blue-t")})
        sent = metric(v, "veer_mirror_requests_total")
        self.assertGreaterEqual(sent, in_mirror / 2)
        live = sum(1 for _, pod in results if pod == "canary-t")
        # through HAProxy's TLS: a plain-text copy would have been answered 400 by it and never reached the pod
        wait_until(lambda: canary.stats()["requests_by_path"]["/api/v1/embed"] == sent + live, 5 * SLOW,
                   what="the copies")
        self.assertEqual(canary.stats()["bytes_received"], (sent + live) * len(EMBED_BYTES))
        self.assertEqual(metric(v, "veer_mirror_failed_total"), 0)
        self.assertIsNone(metric(v, "veer_mirror_dropped_total", '{reason="protocol"}'))
        v.admin("POST", "/v1/routes/web/canary/abort")


if __name__ == "__main__":
    unittest.main()
