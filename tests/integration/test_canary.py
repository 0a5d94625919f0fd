"""The canary controller wired into veer: a healthy progressive run steps up
and promotes (the canary becomes the route's stable cluster, weights 0/100);
a canary turned bad mid-run is rolled back to 0; compare_to_stable catches a
canary worse than stable but above the absolute minimum; no traffic holds and
pauses; operator pause/resume/promote/abort; PUT weights answers 423 during a
run and force aborts it; a restart resumes a run at its weight and keeps a
rolled back route rolled back; the veer_canary_* metrics; /v1/status's
route.canary; `veer ctl canary`."""

import http.client
import os
import shutil
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import EMBED_BODY, SLOW, MockPod, Veer, base_config, do_request, wait_until  # noqa: E402

PODS = {}
POD_NAMES = ("blue-1", "green-1")


def setUpModule():
    harness.start_pods(PODS, POD_NAMES)


def config(**top):
    clusters = {"blue": [PODS["blue-1"].addr], "green": [PODS["green-1"].addr]}
    routes = [{"name": "embed", "match": {"path_prefix": "/api/v1/embed"},
               "split": [{"cluster": "blue", "weight": 100}, {"cluster": "green", "weight": 0}]}]
    return base_config(clusters, routes, **top)


def policy(**over):
    p = {"stable": "blue", "canary": "green", "interval": "300ms", "step_weight": 25, "max_weight": 50,
         "min_requests": 5, "threshold": 2, "success_rate_min": 95, "p99_max": "300ms",
         "compare_to_stable": False, "max_inconclusive": 3}
    p.update(over)
    return p


class Load:
    """Background POSTs to veer over two keep-alive connections until stop()."""

    def __init__(self, port, threads=2):
        self.port = port
        self.stopped = threading.Event()
        self.statuses = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]
        for t in self.threads:
            t.start()

    def run(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        while not self.stopped.is_set():
            try:
                st, _, _ = do_request(conn, "POST", "/api/v1/embed", EMBED_BODY,
                                      {"content-type": "application/json"})
            except (OSError, http.client.HTTPException):
                st = 0
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            with self.lock:
                self.statuses.append(st)
            time.sleep(0.002)
        conn.close()

    def stop(self):
        self.stopped.set()
        for t in self.threads:
            t.join(10)


def canary(v, route="embed"):
    st, js = v.admin("GET", "/v1/routes/%s/canary" % route)
    assert st == 200, (st, js)
    return js


def wait_phase(v, phases, timeout):
    phases = (phases,) if isinstance(phases, str) else phases
    box = {}

    def done():
        box["run"] = canary(v)
        return box["run"]["phase"] in phases
    try:
        wait_until(done, timeout * SLOW, interval=0.05, what="canary phase in %s" % (phases,))
    except AssertionError:
        raise AssertionError("phase never reached %s; last run: %s" % (phases, box.get("run")))
    return box["run"]


def event_kinds(run):
    return [e["kind"] if "kind" in e else e.get("event") for e in run["events"]]


class CanaryTest(unittest.TestCase):
    def setUp(self):
        for p in PODS.values():
            p.fault(error_rate=0, latency="0ms", latency_p99="0ms")
        self.load = None
        self.v = None

    def tearDown(self):
        if self.load is not None:
            self.load.stop()
        if self.v is not None:
            self.v.stop()

    def start(self, **top):
        self.v = Veer(config(**top))
        return self.v

    def test_healthy_run_steps_up_and_promotes(self):
        v = self.start()
        self.load = Load(v.port)
        st, js = v.admin("POST", "/v1/routes/embed/canary", policy())
        self.assertEqual(st, 200, js)
        self.assertEqual(js["phase"], "progressing")
        self.assertEqual(js["weight"], 25)
        self.assertEqual(v.weights("embed"), {"blue": 75, "green": 25})
        run = wait_phase(v, "succeeded", 15)
        self.assertEqual(v.weights("embed"), {"blue": 0, "green": 100})
        self.assertEqual(run["promoted"], "green")
        self.assertEqual(run["stable_cluster"], "green")
        self.assertGreaterEqual(run["checks_passed"], 2)
        self.assertEqual(run["failed_checks"], 0)
        kinds = event_kinds(run)
        self.assertEqual(kinds[0], "started")
        self.assertIn("advanced", kinds)
        self.assertEqual(kinds[-1], "succeeded")
        self.assertGreater(run["last_analysis"]["canary"]["requests"], 0)
        # /v1/status carries the run's summary
        route = [r for r in v.status()["routes"] if r["name"] == "embed"][0]
        self.assertEqual(route["canary"]["phase"], "succeeded")
        self.assertEqual(route["canary"]["weight"], 100)
        self.assertEqual(route["canary"]["max_weight"], 50)
        self.assertEqual(route["canary"]["checks_failed"], 0)
        self.assertIsNotNone(route["canary"]["last_analysis"])
        # every event was logged as one JSON line
        logged = [o for o in v.json_log_lines() if isinstance(o, dict) and o.get("msg") == "canary"]
        self.assertEqual(len(logged), len(run["events"]))
        # a second release starts from the promoted stable cluster
        st, js = v.admin("POST", "/v1/routes/embed/canary", {"canary": "blue", "interval": "300ms",
                                                             "min_requests": 5, "step_weight": 25})
        self.assertEqual(st, 200, js)
        self.assertEqual(js["stable"], "green")
        self.assertEqual(v.weights("embed"), {"blue": 25, "green": 75})

    def test_canary_turning_bad_is_rolled_back(self):
        v = self.start()
        self.load = Load(v.port)
        st, js = v.admin("POST", "/v1/routes/embed/canary", policy(step_weight=10, max_weight=90))
        self.assertEqual(st, 200, js)
        wait_until(lambda: canary(v)["weight"] >= 20, 10 * SLOW, what="weight 20")
        PODS["green-1"].fault(error_rate=0.3)
        t0 = time.time()
        run = wait_phase(v, "rolled_back", 10)
        took = time.time() - t0
        self.assertEqual(v.weights("embed"), {"blue": 100, "green": 0})
        self.assertEqual(run["weight"], 0)
        self.assertEqual(run["failed_checks"], 2)
        self.assertIn("success", run["last_analysis"]["detail"].lower() + str(run["last_analysis"]))
        # threshold 2 at 300 ms: two failing windows, and one partial window of slack
        self.assertLess(took, 3 * 0.3 * SLOW + 1.5)
        text = v.admin("GET", "/metrics")[1]
        self.assertIn('veer_canary_weight{route="embed"} 0', text)
        self.assertIn('veer_canary_phase{route="embed",phase="rolled_back"} 1', text)
        self.assertIn('veer_canary_checks_failed{route="embed"} 2', text)
        self.assertIn('veer_canary_success_ratio{route="embed",cluster="green"}', text)
        self.assertIn('veer_canary_p99_seconds{route="embed",cluster="blue"}', text)
        promtool = shutil.which("promtool")
        self.assertIsNotNone(promtool, "promtool missing: apt-get install -y prometheus")
        p = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=30)
        self.assertEqual((p.returncode, p.stdout + p.stderr), (0, b""))

    def test_latency_rollback_against_p99_max(self):
        # both pools answer in 20 ms; the canary's P99 rises to 400 ms against p99_max 200 ms
        for p in PODS.values():
            p.fault(latency="20ms")
        v = self.start()
        # slow canary requests hold a load thread each: many threads, few requests needed
        self.load = Load(v.port, threads=8)
        st, js = v.admin("POST", "/v1/routes/embed/canary", policy(step_weight=50, max_weight=50, min_requests=2,
                                                                  p99_max="200ms", interval="1s"))
        self.assertEqual(st, 200, js)
        PODS["green-1"].fault(latency="400ms")
        run = wait_phase(v, "rolled_back", 12)
        self.assertEqual(v.weights("embed")["green"], 0)
        a = run["last_analysis"]
        self.assertIn("p99", a["reasons"], a)
        self.assertGreater(a["canary"]["p99_us"], 200000, a)  # 400 ms, over p99_max
        self.assertLess(a["stable"]["p99_us"], 100000, a)     # stable stayed near its 20 ms

    def test_compare_to_stable_catches_a_worse_canary(self):
        v = self.start()
        self.load = Load(v.port, threads=3)
        # 8% errors passes the absolute 90% floor; stable has none
        PODS["green-1"].fault(error_rate=0.08)
        st, js = v.admin("POST", "/v1/routes/embed/canary",
                         policy(success_rate_min=90, compare_to_stable=True, step_weight=50, max_weight=50,
                                interval="500ms", min_requests=30, threshold=2, confidence=0.95))
        self.assertEqual(st, 200, js)
        run = wait_phase(v, "rolled_back", 15)
        reasons = str([e.get("analysis") for e in run["events"]])
        self.assertIn("worse", reasons.lower(), run["events"])

    def test_no_traffic_is_inconclusive_and_pauses(self):
        v = self.start()
        st, js = v.admin("POST", "/v1/routes/embed/canary", policy(max_inconclusive=2))
        self.assertEqual(st, 200, js)
        run = wait_phase(v, "paused", 5)
        self.assertEqual(run["weight"], 25)  # held, not rolled back
        self.assertEqual(run["failed_checks"], 0)
        self.assertIn("inconclusive", run["reason"])
        self.assertEqual(v.weights("embed"), {"blue": 75, "green": 25})

    def test_operator_verbs_and_the_weights_lock(self):
        v = self.start()
        st, js = v.admin("POST", "/v1/routes/embed/canary/pause")
        self.assertEqual(st, 409, js)
        st, js = v.admin("POST", "/v1/routes/embed/canary", policy(interval="5s"))
        self.assertEqual(st, 200, js)
        st, js = v.admin("POST", "/v1/routes/embed/canary", policy(interval="5s"))
        self.assertEqual(st, 409, js)
        st, js = v.set_weights("embed", {"blue": 50, "green": 50})
        self.assertEqual(st, 423, js)
        self.assertEqual(v.weights("embed"), {"blue": 75, "green": 25})
        st, js = v.admin("POST", "/v1/routes/embed/canary/pause")
        self.assertEqual((st, js["phase"]), (200, "paused"))
        st, js = v.admin("POST", "/v1/routes/embed/canary/pause")
        self.assertEqual(st, 409, js)
        st, js = v.set_weights("embed", {"blue": 50, "green": 50})
        self.assertEqual(st, 423, js)
        st, js = v.admin("POST", "/v1/routes/embed/canary/resume")
        self.assertEqual((st, js["phase"]), (200, "progressing"))
        st, js = v.admin("POST", "/v1/routes/embed/canary/promote")
        self.assertEqual(st, 200, js)
        self.assertIn(js["phase"], ("promoting", "succeeded"))
        run = wait_phase(v, "succeeded", 5)
        self.assertEqual(v.weights("embed"), {"blue": 0, "green": 100})
        self.assertEqual(run["stable_cluster"], "green")
        # a finished run no longer owns the weights
        st, js = v.set_weights("embed", {"blue": 100, "green": 0})
        self.assertEqual(st, 200, js)
        # abort rolls back at once
        st, js = v.admin("POST", "/v1/routes/embed/canary", {"stable": "blue", "canary": "green",
                                                             "interval": "5s", "step_weight": 30})
        self.assertEqual(st, 200, js)
        self.assertEqual(v.weights("embed"), {"blue": 70, "green": 30})
        st, js = v.admin("POST", "/v1/routes/embed/canary/abort")
        self.assertEqual((st, js["phase"], js["weight"]), (200, "rolled_back", 0))
        self.assertEqual(v.weights("embed"), {"blue": 100, "green": 0})
        # force: the run is aborted and the operator's weights win
        st, js = v.admin("POST", "/v1/routes/embed/canary", {"stable": "blue", "canary": "green",
                                                             "interval": "5s", "step_weight": 30})
        self.assertEqual(st, 200, js)
        st, js = v.set_weights("embed", {"blue": 40, "green": 60}, force=True)
        self.assertEqual(st, 200, js)
        self.assertEqual(v.weights("embed"), {"blue": 40, "green": 60})
        self.assertEqual(canary(v)["phase"], "rolled_back")
        # bad input: 400 with the key named, unknown route 404
        st, js = v.admin("POST", "/v1/routes/embed/canary", {"canary": "nope"})
        self.assertEqual(st, 400, js)
        self.assertIn("canary", js["error"])
        st, js = v.admin("POST", "/v1/routes/embed/canary", {"step_weight": -3, "canary": "green"})
        self.assertEqual(st, 400, js)
        self.assertIn("step_weight", js["error"])
        st, js = v.admin("POST", "/v1/routes/embed/canary", "{not json")
        self.assertEqual(st, 400, js)
        st, js = v.admin("POST", "/v1/routes/nope/canary", policy())
        self.assertEqual(st, 404, js)
        st, js = v.admin("POST", "/v1/routes/embed/canary/explode")
        self.assertEqual(st, 404, js)
        audits = [o for o in v.audit_lines() if '"canary"' in str(o) or "canary" in str(o.get("change", ""))]
        self.assertTrue(audits)

    def test_restart_resumes_mid_run_and_keeps_a_rollback(self):
        state = os.path.join(harness.TMP, "canary-state-%d.json" % os.getpid())
        cfg = config(state_file=state)
        v = self.v = Veer(cfg)
        st, js = v.admin("POST", "/v1/routes/embed/canary", policy(interval="30s", step_weight=20))
        self.assertEqual(st, 200, js)
        gen = v.generation()
        v.stop()
        v = self.v = Veer(cfg)
        run = canary(v)
        self.assertEqual((run["phase"], run["weight"]), ("progressing", 20))
        self.assertEqual(v.weights("embed"), {"blue": 80, "green": 20})
        self.assertEqual(v.generation(), gen)  # restoring is not a weight change
        st, js = v.set_weights("embed", {"blue": 50, "green": 50})
        self.assertEqual(st, 423, js)  # the restored run still owns the route
        st, js = v.admin("POST", "/v1/routes/embed/canary/abort")
        self.assertEqual(st, 200, js)
        v.stop()
        v = self.v = Veer(cfg)
        run = canary(v)
        self.assertEqual((run["phase"], run["weight"]), ("rolled_back", 0))
        self.assertEqual(v.weights("embed"), {"blue": 100, "green": 0})

    def test_blue_green_switches_and_switches_back(self):
        v = self.start()
        self.load = Load(v.port)
        st, js = v.admin("POST", "/v1/routes/embed/canary", policy(mode="blue_green", iterations=3))
        self.assertEqual(st, 200, js)
        wait_until(lambda: v.weights("embed") == {"blue": 0, "green": 100}, 5 * SLOW, what="switched")
        PODS["green-1"].fault(error_rate=0.5)
        wait_phase(v, "rolled_back", 8)
        self.assertEqual(v.weights("embed"), {"blue": 100, "green": 0})

    def test_blue_green_waits_for_every_canary_endpoint_to_be_healthy(self):
        # green has two pods under an active health check; one fails it: the
        # switch waits (no traffic moves) and the run pauses with the count
        down = MockPod("green-2")
        self.addCleanup(down.stop)
        down.fault(health_fail=True)
        hc = {"path": "/health", "interval": "100ms", "timeout": "80ms", "healthy_threshold": 1,
              "unhealthy_threshold": 1}
        clusters = {"blue": [PODS["blue-1"].addr],
                    "green": {"endpoints": [PODS["green-1"].addr, down.addr], "health_check": hc}}
        routes = [{"name": "embed", "match": {"path_prefix": "/api/v1/embed"},
                   "split": [{"cluster": "blue", "weight": 100}, {"cluster": "green", "weight": 0}]}]
        self.v = v = Veer(base_config(clusters, routes))
        label = '{cluster="green",endpoint="%s"}'
        wait_until(lambda: harness.metric(v, "veer_endpoint_healthy", label % down.addr) == 0, 3 * SLOW,
                   what="green-2 unhealthy")
        self.assertEqual(harness.metric(v, "veer_endpoint_healthy", label % PODS["green-1"].addr), 1)
        st, js = v.admin("POST", "/v1/routes/embed/canary", policy(mode="blue_green", iterations=2,
                                                                    max_inconclusive=3))
        self.assertEqual(st, 200, js)
        run = wait_phase(v, "paused", 5)
        self.assertIn("still has 1 of 2 endpoints healthy", run["reason"])
        self.assertEqual(v.weights("embed"), {"blue": 100, "green": 0})
        # the pod recovers: resume, and the switch happens
        down.fault(health_fail=False)
        wait_until(lambda: harness.metric(v, "veer_endpoint_healthy", label % down.addr) == 1, 3 * SLOW,
                   what="green-2 healthy")
        self.assertEqual(v.admin("POST", "/v1/routes/embed/canary/resume")[0], 200)
        wait_until(lambda: v.weights("embed") == {"blue": 0, "green": 100}, 5 * SLOW, what="switched")

    def test_ab_sends_only_matching_requests_to_the_canary(self):
        v = self.start()
        st, js = v.admin("POST", "/v1/routes/embed/canary",
                         policy(mode="ab", iterations=3, match={"header": "X-Canary-Group", "equals": "b"},
                                interval="400ms", min_requests=3))
        self.assertEqual(st, 200, js)
        self.assertEqual(v.weights("embed"), {"blue": 100, "green": 0})
        pods = {"a": [], "b": []}
        for i in range(40):
            group = "b" if i % 2 else "a"
            st, hd, _ = v.request("POST", "/api/v1/embed", EMBED_BODY,
                                  {"content-type": "application/json", "x-canary-group": group})
            self.assertEqual(st, 200)
            pods[group].append(hd.get("x-pod"))
        self.assertEqual(set(pods["a"]), {"blue-1"})
        self.assertEqual(set(pods["b"]), {"green-1"})
        self.load = Load(v.port)  # no header: none of this reaches green, so analyses need group b traffic
        stop = threading.Event()

        def group_b():
            conn = http.client.HTTPConnection("127.0.0.1", v.port, timeout=10)
            while not stop.is_set():
                do_request(conn, "POST", "/api/v1/embed", EMBED_BODY,
                           {"content-type": "application/json", "x-canary-group": "b"})
                time.sleep(0.01)
            conn.close()
        t = threading.Thread(target=group_b, daemon=True)
        t.start()
        try:
            run = wait_phase(v, "succeeded", 10)
        finally:
            stop.set()
            t.join(10)
        self.assertEqual(v.weights("embed"), {"blue": 0, "green": 100})
        self.assertFalse(run["ab_match"])
        # the match is gone with the run: group a goes where the weights say
        st, hd, _ = v.request("POST", "/api/v1/embed", EMBED_BODY, {"content-type": "application/json",
                                                                    "x-canary-group": "a"})
        self.assertEqual(hd.get("x-pod"), "green-1")

    def test_mirror_starts_a_mirrored_phase(self):
        # the phase itself is tested in test_canary_mirror.py
        v = self.start()
        st, js = v.admin("POST", "/v1/routes/embed/canary", policy(mirror_iterations=2))
        self.assertEqual(st, 200, js)
        self.assertEqual((js["stage"], js["weight"], js["mirror"]), ("mirror", 0, True))

    def test_ctl_canary(self):
        v = self.start()
        self.load = Load(v.port)
        ctl = [harness.VEER_BIN, "ctl", "--admin", "127.0.0.1:%d" % v.admin_port, "canary", "embed"]
        out = subprocess.run(ctl + ["start", "interval=300ms", "min_requests=5", "step_weight=25",
                                    "max_weight=50", "stable=blue", "canary=green"],
                             capture_output=True, text=True, timeout=10)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("progressing", out.stdout)
        t0 = time.time()
        out = subprocess.run(ctl + ["status", "--watch"], capture_output=True, text=True, timeout=30 * SLOW)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertLess(time.time() - t0, 20 * SLOW)
        self.assertIn("succeeded", out.stdout)
        self.assertIn("#", out.stdout)  # the weight bar
        out = subprocess.run(ctl + ["status"], capture_output=True, text=True, timeout=10)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("succeeded", out.stdout)
        out = subprocess.run(ctl + ["pause"], capture_output=True, text=True, timeout=10)
        self.assertNotEqual(out.returncode, 0)
        self.assertIn("409", out.stderr + out.stdout)


if __name__ == "__main__":
    harness.main()
