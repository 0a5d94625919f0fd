"""The status page (GET / on the admin listener) in headless Chromium while
traffic flows: every route is there with its weights, each cluster's
numbers match /v1/stats fetched at the same time, endpoints are listed, and
a screenshot is kept in tests/artifacts/statuspage.png. Chromium missing is
a failure (with the command that installs it), not a skip."""

import html.parser
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import MockPod, Veer, base_config  # noqa: E402

ARTIFACTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "artifacts")
BUDGET_MS = 5000


def chromium_binary():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class PageParser(html.parser.HTMLParser):
    """Collects what the test reads: route sections, weight segments, the
    cluster and endpoint rows' data-field values, and id'd elements' text."""

    def __init__(self):
        super().__init__()
        self.routes = []            # data-route of each route section, in order
        self.weights = {}           # route -> {cluster: weight}
        self.rows = {}              # (route, cluster) -> {field: data-value}
        self.endpoints = {}         # (cluster, address) -> {field: data-value}
        self.text_of = {}           # data-field / id -> text (last seen), per route for canary fields
        self.body_attrs = {}
        self._route = None
        self._row = None
        self._capture = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "body":
            self.body_attrs = a
        if tag == "section" and "data-route" in a:
            self._route = a["data-route"]
            self.routes.append(self._route)
            self.weights[self._route] = {}
        if "data-weight" in a and self._route is not None:
            self.weights[self._route][a["data-cluster"]] = int(a["data-weight"])
        if tag == "tr" and a.get("class") == "cluster":
            self._row = self.rows.setdefault((a["data-route"], a["data-cluster"]), {})
        elif tag == "tr" and a.get("class") == "endpoint":
            self._row = self.endpoints.setdefault((a["data-cluster"], a["data-endpoint"]), {})
        if tag in ("td", "small") and self._row is not None and "data-field" in a:
            self._row[a["data-field"]] = a.get("data-value", "")
            if a["data-field"] == "sparkline":
                self._row["samples"] = a.get("data-samples", "0")
        if "data-field" in a and a["data-field"].startswith("canary_"):
            self._capture = (self._route, a["data-field"])
        elif "id" in a:
            self._capture = (None, a["id"])

    def handle_endtag(self, tag):
        if tag == "tr":
            self._row = None
        if tag == "section":
            self._route = None

    def handle_data(self, data):
        if self._capture is not None:
            self.text_of[self._capture] = self.text_of.get(self._capture, "") + data
            self._capture = None


class StatusPageTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        harness.require_binaries()
        # a fixed latency keeps P99 steady while traffic flows, so the page and
        # a later /v1/stats read agree on it
        cls.pods = {"blue-1": MockPod("blue-1", latency="20ms"), "blue-2": MockPod("blue-2", latency="20ms"),
                    "canary-1": MockPod("canary-1", error_rate=0.25, latency="20ms")}
        clusters = {"blue": [cls.pods["blue-1"].addr, cls.pods["blue-2"].addr],
                    "canary": [cls.pods["canary-1"].addr]}
        routes = [
            {"name": "embed", "match": {"path_prefix": "/api/v1/embed"},
             "split": [{"cluster": "blue", "weight": 80}, {"cluster": "canary", "weight": 20}]},
            {"name": "rest", "match": {"path_prefix": "/"}, "split": [{"cluster": "blue", "weight": 100}]},
        ]
        cls.veer = Veer(base_config(clusters, routes))
        cls.stop_traffic = threading.Event()
        cls.sent = 0
        cls.threads = [threading.Thread(target=cls.traffic, args=(p,), daemon=True)
                       for p in ("/api/v1/embed", "/api/v1/embed", "/status/200")]
        for t in cls.threads:
            t.start()
        harness.wait_until(lambda: cls.sent >= 200, 30, what="traffic flowing")

    @classmethod
    def traffic(cls, path):
        body = harness.EMBED_BODY if path.startswith("/api") else None
        method = "POST" if body else "GET"
        while not cls.stop_traffic.is_set():
            try:
                cls.veer.request(method, path, body=body, headers={"content-type": "application/json"})
                cls.sent += 1
            except OSError:
                time.sleep(0.01)
            time.sleep(0.005)

    @classmethod
    def tearDownClass(cls):
        cls.stop_traffic.set()
        for t in cls.threads:
            t.join(10)
        cls.veer.stop()
        for p in cls.pods.values():
            p.stop()

    def chromium(self, *args):
        exe = chromium_binary()
        self.assertIsNotNone(exe, "chromium is not installed: apt-get install -y chromium fonts-dejavu-core "
                                  "(scripts/install-deps.sh installs it)")
        profile = tempfile.mkdtemp(prefix="veer-chromium-")
        try:
            argv = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--no-first-run", "--user-data-dir=" + profile, "--virtual-time-budget=%d" % BUDGET_MS]
            argv += list(args) + ["http://127.0.0.1:%d/" % self.veer.admin_port]
            p = subprocess.run(argv, capture_output=True, timeout=120)
            self.assertEqual(p.returncode, 0, p.stderr.decode(errors="replace")[-2000:])
            return p.stdout.decode()
        finally:
            shutil.rmtree(profile, ignore_errors=True)

    def test_page_is_self_contained(self):
        st, text = self.veer.admin("GET", "/")
        self.assertEqual(st, 200)
        self.assertIn("<!DOCTYPE html>", text)
        for external in ("src=\"http", "href=\"http", "@import", "<link"):
            self.assertNotIn(external, text)

    def test_dom_matches_stats(self):
        # the run is shorter than the 30 s window, so nothing slides out: what
        # the page shows lies between a read just before and one just after
        st, before = self.veer.admin("GET", "/v1/stats?window=30s")
        self.assertEqual(st, 200, before)
        dom = self.chromium("--dump-dom")
        st, after = self.veer.admin("GET", "/v1/stats?window=30s")
        self.assertEqual(st, 200, after)
        status = self.veer.status()
        page = PageParser()
        page.feed(dom)
        self.assertGreaterEqual(int(page.body_attrs.get("data-refreshes", "0")), 2, "the page refreshes itself")
        self.assertEqual(page.routes, [r["name"] for r in status["routes"]])
        for r in status["routes"]:
            self.assertEqual(page.weights[r["name"]], r["weights"], r["name"])
            self.assertEqual(page.text_of.get((r["name"], "canary_phase")), "—", "no canary run: a dash")
        self.assertEqual(page.text_of.get((None, "generation")), str(status["generation"]))
        windows = {}
        for js in (before, after):
            for r in js["routes"]:
                for c in r["clusters"]:
                    windows.setdefault((r["name"], c["name"]), []).append((c["weight"], c["window"]))
        self.assertEqual(set(page.rows), set(windows))
        for key, ((weight, w0), (_, w1)) in windows.items():
            row = page.rows[key]
            self.assertEqual(int(row["weight"]), weight)
            self.assertTrue(w0["requests"] <= int(row["requests"]) <= w1["requests"], (key, row, w0, w1))
            # failures only grow too: the page's rate times its count is between
            failed = round(int(row["requests"]) * (100 - float(row["success_rate"])) / 100)
            f0, f1 = (sum(w["failures"].values()) for w in (w0, w1))
            self.assertTrue(f0 <= failed <= f1, (key, row, w0, w1))
            # P50 is steady; a P99 of ~100 requests is one of the two slowest,
            # so it can only be bounded: at least the median, at most the
            # slowest request of the later read (its P99.9)
            lo, hi = sorted((w0["p50_ms"], w1["p50_ms"]))
            self.assertTrue(lo * 0.9 <= float(row["p50_ms"]) <= hi * 1.1, (key, row, w0, w1))
            self.assertTrue(float(row["p50_ms"]) <= float(row["p99_ms"]) <= w1["p999_ms"] * 1.01, (key, row, w1))
            lo, hi = sorted((w0["rate"], w1["rate"]))
            self.assertTrue(lo * 0.7 <= float(row["rate"]) <= hi * 1.3, (key, row, w0, w1))
            self.assertGreaterEqual(int(row["samples"]), 2)
        canary = page.rows[("embed", "canary")]
        self.assertLess(float(canary["success_rate"]), 95.0, "25% injected errors show on the page")
        self.assertGreater(float(page.rows[("embed", "blue")]["success_rate"]), 99.0)
        addrs = {(c["name"], e["address"]) for c in status["clusters"] for e in c["endpoints"]}
        self.assertEqual(set(page.endpoints), addrs)
        for ep in page.endpoints.values():
            self.assertEqual(ep["healthy"], "true")
            self.assertEqual(ep["ejected"], "false")

    def test_screenshot(self):
        os.makedirs(ARTIFACTS, exist_ok=True)
        path = os.path.join(ARTIFACTS, "statuspage.png")
        if os.path.exists(path):
            os.unlink(path)
        self.chromium("--screenshot=" + path, "--window-size=1280,900", "--hide-scrollbars")
        self.assertTrue(os.path.exists(path), "no screenshot written")
        with open(path, "rb") as f:
            head = f.read(24)
        self.assertEqual(head[:8], b"\x89PNG\r\n\x1a\n")
        width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
        self.assertEqual((width, height), (1280, 900))
        self.assertGreater(os.path.getsize(path), 20000, "a blank page compresses to almost nothing")


class UnhealthyEndpointPageTest(unittest.TestCase):
    """An endpoint failing its health check is red on the page, with why."""

    def test_unhealthy_endpoint_shows_last_failure(self):
        harness.require_binaries()
        p1, p2 = MockPod("sick-1"), MockPod("well-1")
        self.addCleanup(p2.stop)
        self.addCleanup(p1.stop)
        p1.fault(health_fail=True)
        check = {"path": "/health", "interval": "100ms", "timeout": "80ms", "unhealthy_threshold": 2}
        self.veer = veer = Veer(base_config({"blue": {"endpoints": [p1.addr, p2.addr], "health_check": check}},
                                            [{"name": "all", "match": {"path_prefix": "/"},
                                              "split": [{"cluster": "blue", "weight": 100}]}]))
        self.addCleanup(veer.stop)

        def health(addr):
            return next(e["health"] for e in veer.status()["clusters"][0]["endpoints"] if e["address"] == addr)
        harness.wait_until(lambda: health(p1.addr)["state"] == "unhealthy" and health(p2.addr)["state"] == "healthy",
                           10, what="p1 unhealthy, p2 healthy")
        page = PageParser()
        page.feed(StatusPageTest.chromium(self, "--dump-dom"))
        sick, well = page.endpoints[("blue", p1.addr)], page.endpoints[("blue", p2.addr)]
        self.assertEqual(sick["healthy"], "false")
        self.assertEqual(sick["last_failure"], health(p1.addr)["last_failure"]["reason"])
        self.assertEqual(sick["last_failure"], "status 503")
        self.assertEqual(well["healthy"], "true")
        self.assertNotIn("last_failure", well)


if __name__ == "__main__":
    unittest.main()
