"""Three veer replicas and a real Prometheus server (Debian's
/usr/bin/prometheus) on loopback, end to end: Prometheus scrapes the three
admin /metrics every 500 ms; replica A is the canary leader (peers.leader
true, peers B and C), B and C follow (peers.leader false). Client traffic
goes ONLY through the followers, so the leader's own stats stay empty and
its run can only be judged from Prometheus' sums over the replicas: a healthy
release is stepped up and promoted with B and C at A's weights and
generation at every step, and x-pod shows green serving afterwards; a release
whose canary pods answer 30% errors is rolled back from Prometheus' numbers
and B and C end at 0 for the canary with A's generation; the followers answer
409 to canary calls. Without the prometheus binary the module is skipped
with a loud message (scripts/install-deps.sh installs it)."""

import http.client
import json
import os
import re
import shutil
import sys
import threading
import time
import unittest
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import EMBED_BODY, SLOW, Veer, base_config, cluster_of, wait_until  # noqa: E402

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PODS = {}
POD_NAMES = ("blue-1", "blue-2", "green-1", "green-2")
TOKEN = "multi-replica-token-1"
WINDOW = "3s"          # query_window: six scrapes at 500 ms
START = {"blue": 100, "green": 0}
LOAD_RPS = 200         # total, spread over B and C


def setUpModule():
    harness.start_pods(PODS, POD_NAMES)


def token_file():
    path = os.path.join(harness.TMP, "token")
    if not os.path.exists(path):
        with open(path, "w") as f:
            f.write(TOKEN + "\n")
    return path


def replica_config(admins, leader, admin_port, listen_port):
    clusters = {"blue": [PODS["blue-1"].addr, PODS["blue-2"].addr],
                "green": [PODS["green-1"].addr, PODS["green-2"].addr]}
    routes = [{"name": "embed", "match": {"path_prefix": "/api/v1/embed"},
               "split": [{"cluster": c, "weight": w} for c, w in START.items()]}]
    cfg = base_config(clusters, routes)
    cfg["listeners"][0]["address"] = "127.0.0.1:%d" % listen_port
    cfg["admin"]["address"] = "127.0.0.1:%d" % admin_port
    cfg["admin"]["token_file"] = token_file()
    cfg["peers"] = {"admins": ["127.0.0.1:%d" % p for p in admins], "leader": leader,
                    "token_file": token_file(), "timeout": "500ms", "retries": 2}
    return cfg


class Prometheus:
    """A real Prometheus server in its own temp dir, scraping targets every
    500 ms. Its log stays in harness.TMP (kept when a test fails)."""

    def __init__(self, targets):
        self.dir = os.path.join(harness.TMP, "prometheus")
        os.makedirs(os.path.join(self.dir, "data"))
        self.config = os.path.join(self.dir, "prometheus.yml")
        with open(self.config, "w") as f:
            f.write("global:\n  scrape_interval: 500ms\n  scrape_timeout: 450ms\n"
                    "  evaluation_interval: 10s\n"
                    "scrape_configs:\n  - job_name: veer\n    metrics_path: /metrics\n"
                    "    static_configs:\n      - targets: [%s]\n" % ", ".join('"%s"' % t for t in targets))
        self.targets = set(targets)
        for attempt in range(3):
            self.port = harness.free_port()
            self.url = "http://127.0.0.1:%d" % self.port
            self.proc, self.out, self.err = harness.spawn(
                [PROMETHEUS, "--config.file=" + self.config, "--storage.tsdb.path=" + os.path.join(self.dir, "data"),
                 "--web.listen-address=127.0.0.1:%d" % self.port, "--storage.tsdb.retention.time=1h",
                 "--log.level=warn", "--query.lookback-delta=30s"], "prometheus-%d" % attempt)
            try:
                self.wait_ready(30 * SLOW)
                return
            except AssertionError:
                if self.proc.poll() is None or "address already in use" not in harness.tail(self.err):
                    raise
        raise AssertionError("prometheus could not bind a port in 3 attempts:\n%s" % harness.tail(self.err))

    def log(self, n=20):
        return harness.tail(self.err, n)

    def get(self, path, params=None, timeout=5):
        url = self.url + path + ("?" + urllib.parse.urlencode(params) if params else "")
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()

    def wait_ready(self, timeout):
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError("prometheus exited with %s:\n%s" % (self.proc.returncode, self.log()))
            try:
                return self.get("/-/ready", timeout=1)[0] == 200
            except OSError:
                return False
        wait_until(ready, timeout, interval=0.1, what="prometheus /-/ready")

    def target_health(self):
        _, data = self.get("/api/v1/targets", {"state": "active"})
        return {t["labels"]["instance"]: (t["health"], t.get("lastError"))
                for t in json.loads(data)["data"]["activeTargets"]}

    def wait_targets_up(self, timeout):
        box = {}

        def up():
            box["h"] = self.target_health()
            return set(box["h"]) == self.targets and all(h == "up" for h, _ in box["h"].values())
        try:
            wait_until(up, timeout, interval=0.1, what="every target up")
        except AssertionError:
            raise AssertionError("targets not all up: %s\nprometheus log:\n%s" % (box.get("h"), self.log()))

    def value(self, promql):
        """An instant query's single value; 0.0 for an empty vector."""
        _, data = self.get("/api/v1/query", {"query": promql})
        res = json.loads(data)["data"]["result"]
        return float(res[0]["value"][1]) if res else 0.0

    def stop(self):
        harness.kill(self.proc)


class Load:
    """Paced POSTs through the followers only: one keep-alive connection per
    thread, each thread at rps/threads requests per second. Every response is
    recorded as (time it was sent, replica port, status, x-pod)."""

    def __init__(self, ports, rps=LOAD_RPS, per_port=2):
        self.stopped = threading.Event()
        self.lock = threading.Lock()
        self.seen = []
        self.threads = [threading.Thread(target=self.run, args=(p, len(ports) * per_port / rps), daemon=True)
                        for p in ports for _ in range(per_port)]
        for t in self.threads:
            t.start()

    def run(self, port, period):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        next_at = time.monotonic()
        while not self.stopped.is_set():
            sent = time.time()
            try:
                st, h, _ = harness.do_request(conn, "POST", "/api/v1/embed", EMBED_BODY,
                                              {"content-type": "application/json"})
                pod = h.get("x-pod")
            except (OSError, http.client.HTTPException):
                st, pod = 0, None
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            with self.lock:
                self.seen.append((sent, port, st, pod))
            next_at += period
            delay = next_at - time.monotonic()
            if delay > 0:
                self.stopped.wait(delay)
            else:
                next_at = time.monotonic()  # behind: do not burst to catch up
        conn.close()

    def since(self, t):
        with self.lock:
            return [s for s in self.seen if s[0] >= t]

    def stop(self):
        self.stopped.set()
        for t in self.threads:
            t.join(10)


class Recorder:
    """Polls (weights, generation) of every replica's route every 40 ms while
    a run goes on; keeps each replica's sequence of distinct states."""

    def __init__(self, replicas):
        self.replicas = replicas
        self.states = {name: [] for name in replicas}
        self.errors = []
        self.stopped = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.stopped.is_set():
            for name, v in self.replicas.items():
                try:
                    r = v.route("embed")
                    state = (tuple(sorted(harness.route_weights(r).items())), r["generation"])
                except (AssertionError, OSError, http.client.HTTPException, KeyError) as e:
                    self.errors.append("%s: %r" % (name, e))
                    continue
                seq = self.states[name]
                if not seq or seq[-1] != state:
                    seq.append(state)
            self.stopped.wait(0.04)

    def stop(self):
        self.stopped.set()
        self.t.join(5)

    def text(self):
        return "\n".join("  %s: %s" % (n, " -> ".join("%s@%d" % (dict(w), g) for w, g in seq))
                         for n, seq in self.states.items())


def policy(prom_url, **over):
    p = {"stable": "blue", "canary": "green", "interval": "1s", "step_weight": 25, "max_weight": 50,
         "min_requests": 20, "threshold": 2, "success_rate_min": 95, "p99_max": "500ms",
         "compare_to_stable": True, "max_inconclusive": 6, "promotion_step_weight": 0,
         "source": {"prometheus": prom_url, "query_window": WINDOW, "timeout": "1500ms"}}
    p.update(over)
    return p


def own_requests(v):
    """Requests this replica itself served on route embed, from its /metrics."""
    text = v.admin("GET", "/metrics")[1]
    return sum(float(m) for m in re.findall(r'^veer_requests_total\{route="embed",[^}]*\} (\S+)$', text, re.M))


class MultiReplicaPrometheusTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not os.access(PROMETHEUS, os.X_OK):
            msg = ("SKIPPED LOUDLY: %s not found or not executable; this end-to-end test needs a real Prometheus "
                   "server (Debian package `prometheus`, installed by scripts/install-deps.sh)" % PROMETHEUS)
            sys.stderr.write("\n*** %s ***\n" % msg)
            raise unittest.SkipTest(msg)
        cls.prom = None
        cls.replicas = {}
        try:
            admin = {n: harness.free_port() for n in "ABC"}
            listen = {n: harness.free_port() for n in "ABC"}
            peers = {"A": ("B", "C"), "B": ("A", "C"), "C": ("A", "B")}
            for n in "ABC":
                cfg = replica_config([admin[o] for o in peers[n]], n == "A", admin[n], listen[n])
                v = Veer(cfg, name="replica-" + n)
                # the peer lists name the ports chosen above: a retry on other ports would break them
                if v.admin_port != admin[n]:
                    raise AssertionError("replica %s had to move its admin port (taken meanwhile); rerun" % n)
                cls.replicas[n] = v
            cls.A, cls.B, cls.C = (cls.replicas[n] for n in "ABC")
            cls.prom = Prometheus(["127.0.0.1:%d" % v.admin_port for v in cls.replicas.values()])
            cls.prom.wait_targets_up(15 * SLOW)
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        if cls.prom is not None:
            cls.prom.stop()
        for v in cls.replicas.values():
            if v.alive():
                v.stop()

    def setUp(self):
        self.load = None
        self.recorder = None
        for p in PODS.values():
            p.fault(error_rate=0, latency="0ms", latency_p99="0ms")
        for v in self.replicas.values():
            v.assert_alive()
        self.reset_route()

    def tearDown(self):
        if self.recorder is not None:
            self.recorder.stop()
        if self.load is not None:
            self.load.stop()

    # -- helpers
    def canary(self, v):
        st, js = v.admin("GET", "/v1/routes/embed/canary")
        self.assertEqual(st, 200, js)
        return js

    def state(self, v):
        r = v.route("embed")
        return harness.route_weights(r), r["generation"]

    def in_sync(self):
        a = self.state(self.A)
        return all(self.state(v) == a for v in (self.B, self.C))

    def reset_route(self):
        """Every replica at blue 100 / green 0 by an operator PUT on the leader."""
        if self.canary(self.A)["phase"] in ("progressing", "promoting", "paused"):
            self.A.admin("POST", "/v1/routes/embed/canary/abort", token=TOKEN)
        if self.A.weights("embed") != START:
            st, js = self.A.set_weights("embed", START, token=TOKEN)
            self.assertEqual(st, 200, js)
        wait_until(self.in_sync, 3 * SLOW, what="followers at the leader's weights and generation")

    def green_quiet_blue_flowing(self):
        """Prometheus' window holds no green traffic (an earlier run's) and
        the followers' blue traffic is scraped: the run starts from a clean
        window."""
        green = self.prom.value('sum(increase(veer_requests_total{route="embed",cluster="green"}[%s]))' % WINDOW)
        blue = self.prom.value('sum(increase(veer_requests_total{route="embed",cluster="blue"}[%s]))' % WINDOW)
        return green == 0 and blue > 50

    def start_load_and_wait_clean_window(self):
        self.load = Load([self.B.port, self.C.port])
        try:
            wait_until(self.green_quiet_blue_flowing, 15 * SLOW, interval=0.2, what="a clean Prometheus window")
        except AssertionError as e:
            raise AssertionError("%s; targets %s\nprometheus log:\n%s" % (e, self.prom.target_health(),
                                                                          self.prom.log()))

    def wait_phase(self, phases, timeout):
        box = {}

        def done():
            box["run"] = self.canary(self.A)
            return box["run"]["phase"] in phases
        try:
            wait_until(done, timeout, interval=0.05, what="phase in %s" % (phases,))
        except AssertionError:
            raise AssertionError("A's run never reached %s; last run: %s\nreplica states:\n%s" % (
                phases, json.dumps(box.get("run")), self.recorder.text() if self.recorder else ""))
        return box["run"]

    def assert_lockstep(self, path):
        """B and C went through exactly A's states, generation included, and A's
        weights followed path."""
        seq = self.recorder.states
        a = seq["A"]
        self.assertEqual([dict(w) for w, _ in a], path, "A's weights:\n" + self.recorder.text())
        gens = [g for _, g in a]
        self.assertEqual(gens, sorted(set(gens)), "A's generations must rise:\n" + self.recorder.text())
        for n in ("B", "C"):
            self.assertEqual(seq[n], a, "%s did not follow A step by step:\n%s" % (n, self.recorder.text()))
        self.assertEqual(self.recorder.errors, [])

    def start_run(self, **over):
        self.recorder = Recorder(self.replicas)
        wait_until(lambda: all(self.recorder.states.values()), 2 * SLOW, what="first poll of every replica")
        t0 = time.time()
        st, js = self.A.admin("POST", "/v1/routes/embed/canary", policy(self.prom.url, **over), token=TOKEN)
        self.assertEqual(st, 200, js)
        self.assertEqual(js["source"]["kind"], "prometheus", js)
        return t0

    def check_source(self, run):
        src = run["source"]
        self.assertEqual(src["prometheus"], self.prom.url)
        self.assertGreater(src["queries"], 0, src)
        self.assertEqual(src["errors"], 0, src)
        self.assertIsNone(src["last_error"], src)
        # the leader served nothing itself: every number came from Prometheus
        self.assertEqual(own_requests(self.A), 0)

    def run_release(self, phase, states):
        """Load through the followers, a run on the leader until it ends in
        phase, the followers in sync with it, and every replica through
        exactly these states. Returns (run, start, seconds, in-sync time)."""
        self.start_load_and_wait_clean_window()
        t0 = self.start_run()
        run = self.wait_phase(("succeeded", "rolled_back", "paused"), 25 * SLOW)
        took = time.time() - t0
        self.assertEqual(run["phase"], phase, json.dumps(run))
        wait_until(self.in_sync, 3 * SLOW, what="followers at the leader's end state")
        t_sync = time.time()
        time.sleep(0.3)
        self.recorder.stop()
        self.assert_lockstep(states)
        return run, t0, took, t_sync

    # -- tests
    def test_1_healthy_release_promoted_from_prometheus_sums_in_lockstep(self):
        run, t0, took, t_sync = self.run_release("succeeded", [START, {"blue": 75, "green": 25},
                                                               {"blue": 50, "green": 50}, {"blue": 0, "green": 100}])
        self.assertEqual(run["failed_checks"], 0, json.dumps(run))
        self.assertGreaterEqual(run["checks_passed"], 2, json.dumps(run))
        self.check_source(run)
        a = run["last_analysis"]
        self.assertGreaterEqual(a["canary"]["requests"], 20, a)
        self.assertEqual(a["canary"]["failures"], 0, a)
        self.assertGreater(a["stable"]["requests"], 0, a)
        # traffic moved: the followers' answers before the run came from blue,
        # after they took the promotion only from green, and all were 200
        before = [s for s in self.load.seen if s[0] < t0]
        after = self.load.since(t_sync + 0.05)
        self.assertTrue(before and after)
        self.assertEqual({cluster_of(pod) for _, _, _, pod in before}, {"blue"})
        self.assertEqual({cluster_of(pod) for _, _, _, pod in after}, {"green"})
        self.assertEqual({port for _, port, _, _ in after}, {self.B.port, self.C.port})
        self.assertEqual({st for _, _, st, _ in self.load.seen}, {200})
        sys.stderr.write("\n  [healthy] promoted %.1fs after start; states:\n%s\n  load %d requests, %.0f req/s\n" % (
            took, self.recorder.text(), len(self.load.seen),
            len(self.load.seen) / max(0.001, self.load.seen[-1][0] - self.load.seen[0][0])))

    def test_2_faulty_release_rolled_back_from_prometheus_numbers(self):
        for name in ("green-1", "green-2"):
            PODS[name].fault(error_rate=0.3)
        run, t0, took, t_sync = self.run_release("rolled_back", [START, {"blue": 75, "green": 25}, START])
        gen = self.A.generation()
        for v in (self.B, self.C):
            self.assertEqual(self.state(v), (START, gen))
        self.assertEqual(run["failed_checks"], 2, json.dumps(run))
        self.check_source(run)
        a = run["last_analysis"]
        self.assertGreater(a["canary"]["failures"], 0, a)
        self.assertLess(a["canary"]["success_rate"], 95, a)
        # the errors were real and came from green through the followers; after
        # the rollback only blue answers, without errors
        during = [s for s in self.load.seen if t0 <= s[0] < t_sync]
        self.assertTrue(any(st >= 500 and cluster_of(pod) == "green" for _, _, st, pod in during))
        after = self.load.since(t_sync + 0.05)
        self.assertTrue(after)
        self.assertEqual({(cluster_of(pod), st) for _, _, st, pod in after}, {("blue", 200)})
        sys.stderr.write("\n  [faulty] rolled back %.1fs after start; states:\n%s\n" % (took, self.recorder.text()))

    def test_3_followers_refuse_canary_calls(self):
        for v in (self.B, self.C):
            st, js = v.admin("POST", "/v1/routes/embed/canary", policy(self.prom.url), token=TOKEN)
            self.assertEqual(st, 409, js)
            self.assertIn("leader", js["error"])
            st, js = v.admin("POST", "/v1/routes/embed/canary/pause", token=TOKEN)
            self.assertEqual(st, 409, js)
            self.assertEqual(v.status()["leader"], False)
            self.assertEqual(self.canary(v)["phase"], "idle")
        self.assertEqual(self.A.status()["leader"], True)


if __name__ == "__main__":
    harness.main()
