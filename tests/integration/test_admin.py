"""The admin API: health and status reads, weight changes (generation, 409 on
a stale if_generation, 400 for bad input with nothing changed), bearer-token
auth, the audit line per mutation, GET /v1/config, the state file across a
restart, reload (good and bad config files), and `veer check`."""

import collections
import copy
import json
import os
import re
import signal
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import EMBED_BODY, Veer, base_config, cluster_of, fan_out  # noqa: E402

PODS = {}


def setUpModule():
    harness.start_pods(PODS)


def standard_config(**top):
    clusters = {
        "blue": {"endpoints": [PODS["blue-1"].addr, PODS["blue-2"].addr], "lb": "round_robin",
                 "connect_timeout": "1s"},
        "canary": {"endpoints": [PODS["canary-1"].addr]},
    }
    routes = [
        {"name": "embed", "match": {"path_prefix": "/api/v1/embed"},
         "split": [{"cluster": "blue", "weight": 90}, {"cluster": "canary", "weight": 10}],
         "overrides": [{"header": "x-canary", "equals": "always", "cluster": "canary"},
                       {"cookie": "veer-pool", "equals": "canary", "cluster": "canary"}],
         "sticky": {"header": "x-user-id"}, "timeout": "10s"},
        {"name": "rest", "match": {"path_prefix": "/"}, "split": [{"cluster": "blue", "weight": 100}]},
    ]
    return base_config(clusters, routes, **top)


def embed_clusters(veer, n=50):
    res = fan_out(veer.port, n, "POST", "/api/v1/embed", EMBED_BODY, {"Content-Type": "application/json"},
                  threads=2)
    return collections.Counter((r[1], cluster_of(r[2])) for r in res)


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


class AdminReadTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.veer = Veer(standard_config())

    def test_healthz_readyz(self):
        self.assertEqual(self.veer.admin("GET", "/healthz")[0], 200)
        self.assertEqual(self.veer.admin("GET", "/readyz")[0], 200)

    def test_status(self):
        st, js = self.veer.admin("GET", "/v1/status")
        self.assertEqual(st, 200, js)
        for key in ("routes", "clusters", "generation"):
            self.assertIn(key, js)
        self.assertIn("embed", json.dumps(js["routes"]))
        self.assertIn("canary", json.dumps(js["clusters"]))
        self.assertIsInstance(js["generation"], int)

    def test_get_route(self):
        st, js = self.veer.admin("GET", "/v1/routes/embed")
        self.assertEqual(st, 200, js)
        self.assertEqual(harness.route_weights(js), {"blue": 90, "canary": 10})
        st, js = self.veer.admin("GET", "/v1/routes/no-such-route")
        self.assertEqual(st, 404, js)
        st, js = self.veer.set_weights("no-such-route", {"blue": 1})
        self.assertEqual(st, 404, js)

    def test_get_config(self):
        st, js = self.veer.admin("GET", "/v1/config")
        self.assertEqual(st, 200, js)
        cfg = self.veer.config
        self.assertEqual([r["name"] for r in js["routes"]], [r["name"] for r in cfg["routes"]])
        self.assertEqual(set(js["clusters"]), set(cfg["clusters"]))
        self.assertEqual(js["clusters"]["blue"]["endpoints"], cfg["clusters"]["blue"]["endpoints"])
        self.assertEqual(js["listeners"][0]["address"], cfg["listeners"][0]["address"])
        self.assertEqual(js["routes"][0]["split"], cfg["routes"][0]["split"])


class WeightsTest(unittest.TestCase):
    def setUp(self):
        self.veer = Veer(standard_config())

    def tearDown(self):
        self.veer.stop()

    def test_put_weights_traffic_follows(self):
        g0 = self.veer.generation()
        st, js = self.veer.set_weights("embed", {"blue": 0, "canary": 100})
        self.assertEqual(st, 200, js)
        self.assertGreater(js["generation"], g0)
        self.assertEqual(self.veer.generation(), js["generation"])
        self.assertEqual(self.veer.weights("embed"), {"blue": 0, "canary": 100})
        t0 = time.time()
        harness.wait_until(lambda: embed_clusters(self.veer, 4) == {(200, "canary"): 4}, 1.0,
                           what="traffic to follow 0/100")
        self.assertLess(time.time() - t0, 1.0)
        self.assertEqual(embed_clusters(self.veer, 100), {(200, "canary"): 100})
        # and back
        st, js2 = self.veer.set_weights("embed", {"blue": 100, "canary": 0})
        self.assertEqual(st, 200, js2)
        self.assertGreater(js2["generation"], js["generation"])
        harness.wait_until(lambda: embed_clusters(self.veer, 4) == {(200, "blue"): 4}, 1.0,
                           what="traffic to follow 100/0")
        self.assertEqual(embed_clusters(self.veer, 100), {(200, "blue"): 100})

    def test_if_generation(self):
        g = self.veer.generation()
        st, js = self.veer.set_weights("embed", {"blue": 50, "canary": 50}, if_generation=g)
        self.assertEqual(st, 200, js)
        g2 = js["generation"]
        st, js = self.veer.set_weights("embed", {"blue": 20, "canary": 80}, if_generation=g)
        self.assertEqual(st, 409, js)
        self.assertEqual(self.veer.generation(), g2)
        self.assertEqual(self.veer.weights("embed"), {"blue": 50, "canary": 50})

    def test_invalid_weights_change_nothing(self):
        g = self.veer.generation()
        before = self.veer.weights("embed")
        cases = {
            "unknown cluster": {"weights": {"gren": 10, "blue": 90}},
            "negative weight": {"weights": {"blue": -1, "canary": 101}},
            "all zero": {"weights": {"blue": 0, "canary": 0}},
            "weights not an object": {"weights": [90, 10]},
            "weight not a number": {"weights": {"blue": "ninety", "canary": 10}},
            "no weights": {"if_generation": g},
            "malformed json": '{"weights": {"blue": 1',
        }
        for name, body in cases.items():
            with self.subTest(name):
                st, js = self.veer.admin("PUT", "/v1/routes/embed/weights", body,
                                         headers={"Content-Type": "application/json"})
                self.assertEqual(st, 400, js)
                self.assertIsInstance(js, dict, "admin errors are JSON: %r" % js)
                self.assertIn("error", js)
                self.assertEqual(self.veer.generation(), g)
                self.assertEqual(self.veer.weights("embed"), before)
        counts = embed_clusters(self.veer, 100)
        self.assertEqual(sum(counts.values()), counts[(200, "blue")] + counts[(200, "canary")])

    def test_audit_line_per_mutation(self):
        n0 = len(self.veer.audit_lines())
        gens = []
        for w in (10, 20, 30):
            st, js = self.veer.set_weights("embed", {"blue": 100 - w, "canary": w})
            self.assertEqual(st, 200, js)
            gens.append(js["generation"])
        self.veer.set_weights("embed", {"nope": 1})  # refused: may be logged, but changes nothing

        def lines_for(g):
            return [o for o in self.veer.audit_lines()[n0:] if o.get("generation") == g
                    or (isinstance(o.get("change"), dict) and o["change"].get("generation") == g)]
        try:
            harness.wait_until(lambda: all(lines_for(g) for g in gens), 3.0, what="an audit line per PUT")
        except AssertionError:
            self.fail("no JSON audit line with \"remote\" and the new generation on stderr for each admin PUT; "
                      "stderr tail:\n%s" % "\n".join(self.veer.stderr_lines()[-10:]))
        for g in gens:
            found = lines_for(g)
            self.assertEqual(len(found), 1, "audit lines for generation %d: %r" % (g, found))
            line = found[0]
            self.assertIn("127.0.0.1", str(line["remote"]), line)
            self.assertIn("embed", json.dumps(line), "audit line does not say what changed: %r" % line)
            self.assertIn("canary", json.dumps(line), "audit line does not say what changed: %r" % line)


class TokenTest(unittest.TestCase):
    def test_token_auth(self):
        token_file = os.path.join(harness.TMP, "admin-token")
        write(token_file, "s3cret-token\n")
        os.chmod(token_file, 0o600)
        cfg = standard_config()
        cfg["admin"]["token_file"] = token_file
        veer = Veer(cfg)
        w = {"blue": 70, "canary": 30}
        st, js = veer.set_weights("embed", w)
        self.assertEqual(st, 401, js)
        st, js = veer.set_weights("embed", w, token="wrong")
        self.assertEqual(st, 403, js)
        st, js = veer.admin("PUT", "/v1/routes/embed/weights", {"weights": w},
                            headers={"Authorization": "Basic czNjcmV0LXRva2Vu"})
        self.assertIn(st, (401, 403), js)
        self.assertEqual(veer.weights("embed"), {"blue": 90, "canary": 10})  # reads stay open
        st, js = veer.admin("POST", "/v1/reload")
        self.assertEqual(st, 401, js)
        st, js = veer.admin("POST", "/v1/drain")
        self.assertEqual(st, 401, js)
        self.assertEqual(veer.admin("GET", "/readyz")[0], 200)
        st, js = veer.set_weights("embed", w, token="s3cret-token")
        self.assertEqual(st, 200, js)
        self.assertEqual(veer.weights("embed"), w)
        self.assertEqual(veer.admin("GET", "/v1/status")[0], 200)
        veer.stop()


class StateAndReloadTest(unittest.TestCase):
    def test_state_file_survives_restart(self):
        state = os.path.join(harness.TMP, "state-%d.json" % os.getpid())
        veer = Veer(standard_config(state_file=state))
        st, js = veer.set_weights("embed", {"blue": 30, "canary": 70})
        self.assertEqual(st, 200, js)
        g = js["generation"]
        self.assertTrue(os.path.exists(state), "state file not written before the PUT answered")
        self.assertEqual(veer.stop(), 0)
        again = Veer(veer.config_path)
        self.assertEqual(again.weights("embed"), {"blue": 30, "canary": 70})
        self.assertEqual(again.generation(), g)
        counts = embed_clusters(again, 200)
        self.assertGreater(counts[(200, "canary")], 100, counts)
        again.stop()

    def test_reload_endpoint(self):
        veer = Veer(standard_config())
        st, js = veer.set_weights("embed", {"blue": 40, "canary": 60})
        self.assertEqual(st, 200, js)
        self.assertEqual(cluster_of(veer.request("GET", "/extra/x")[1].get("x-pod")), "blue")
        cfg = copy.deepcopy(veer.config)
        cfg["routes"].insert(1, {"name": "extra", "match": {"path_prefix": "/extra"},
                                 "split": [{"cluster": "canary", "weight": 100}]})
        veer.write_config(cfg)
        st, js = veer.admin("POST", "/v1/reload")
        self.assertEqual(st, 200, js)
        for _ in range(10):
            st, hd, body = veer.request("GET", "/extra/x")
            self.assertEqual(cluster_of(hd.get("x-pod")), "canary", (st, hd, body))
        st, js = veer.admin("GET", "/v1/config")
        self.assertIn("extra", [r["name"] for r in js["routes"]])
        self.assertIsNotNone(veer.admin("GET", "/v1/routes/extra")[1])
        # the embed split did not change in the file: runtime weights survive the reload
        self.assertEqual(veer.weights("embed"), {"blue": 40, "canary": 60})
        veer.stop()

    def test_reload_invalid_config_keeps_serving(self):
        veer = Veer(standard_config())
        good = copy.deepcopy(veer.config)
        bad = copy.deepcopy(good)
        bad["routes"][0]["split"][0]["cluster"] = "gren"
        bad["routes"].insert(1, {"name": "extra", "match": {"path_prefix": "/extra"},
                                 "split": [{"cluster": "canary", "weight": 100}]})
        veer.write_config(bad)
        st, js = veer.admin("POST", "/v1/reload")
        self.assertEqual(st, 400, js)
        self.assertIn("routes[0].split[0].cluster", json.dumps(js), js)
        st, js = veer.admin("GET", "/v1/config")
        self.assertEqual([r["name"] for r in js["routes"]], ["embed", "rest"])
        self.assertEqual(cluster_of(veer.request("GET", "/extra/x")[1].get("x-pod")), "blue")
        counts = embed_clusters(veer, 20)
        self.assertEqual(sum(c for (st, _), c in counts.items() if st == 200), 20, counts)
        # the same through SIGHUP: logged, old config stays
        veer.reload()
        time.sleep(0.5 * harness.SLOW)
        self.assertTrue(veer.alive(), "veer died on SIGHUP with an invalid config")
        self.assertEqual(veer.admin("GET", "/readyz")[0], 200)
        st, hd, _ = veer.request("GET", "/extra/x")  # the pod may 404 the path: x-pod says who answered
        self.assertEqual(cluster_of(hd.get("x-pod")), "blue", (st, hd))
        self.assertIn("routes[0].split[0].cluster", "\n".join(veer.stderr_lines()),
                      "SIGHUP reload error not logged with its JSON path")
        # and a good file through SIGHUP is taken
        good["routes"].insert(1, {"name": "extra", "match": {"path_prefix": "/extra"},
                                  "split": [{"cluster": "canary", "weight": 100}]})
        veer.write_config(good)
        veer.reload()
        harness.wait_until(lambda: cluster_of(veer.request("GET", "/extra/x")[1].get("x-pod")) == "canary",
                           5 * harness.SLOW, what="SIGHUP reload to take the new route")
        veer.stop()


class CheckCliTest(unittest.TestCase):
    def run_veer(self, *args):
        return subprocess.run([harness.VEER_BIN] + list(args), capture_output=True, text=True, timeout=30)

    def test_check_good_config(self):
        path = os.path.join(harness.TMP, "good.json")
        write(path, json.dumps(standard_config()))
        p = self.run_veer("check", "-c", path)
        self.assertEqual(p.returncode, 0, p.stderr)

    def test_check_bad_config_prints_every_error_path(self):
        cfg = standard_config()
        cfg["routes"][0]["split"][0]["cluster"] = "gren"
        cfg["limits"]["max_header_byte"] = 100           # typo: unknown key
        cfg["routes"][1]["timeout"] = "10 parsecs"
        cfg["clusters"]["blue"]["lb"] = "fastest"
        path = os.path.join(harness.TMP, "bad.json")
        write(path, json.dumps(cfg))
        p = self.run_veer("check", "-c", path)
        self.assertEqual(p.returncode, 1, p.stderr)
        lines = p.stderr.splitlines()
        for where in ("routes[0].split[0].cluster", "limits.max_header_byte", "routes[1].timeout",
                      "clusters.blue.lb"):
            self.assertTrue(any(re.search(re.escape(where) + r"\s*:", l) for l in lines),
                            "no `%s: ...` error in:\n%s" % (where, p.stderr))
        self.assertTrue(any("unknown cluster" in l and "routes[0].split[0].cluster" in l for l in lines), p.stderr)

    def test_run_with_a_bad_config_exits_1_and_frees_everything(self):
        # run (not check) refuses a bad file at start with every error named;
        # under the sanitizer build a leak on that path fails this test
        cfg = standard_config()
        cfg["routes"][0]["split"][0]["cluster"] = "gren"
        path = os.path.join(harness.TMP, "bad-run.json")
        write(path, json.dumps(cfg))
        p = self.run_veer("run", "-c", path)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("routes[0].split[0].cluster", p.stderr)
        self.assertNotIn("LeakSanitizer", p.stderr)
        self.assertNotIn("AddressSanitizer", p.stderr)

    def test_check_not_json(self):
        path = os.path.join(harness.TMP, "notjson.json")
        write(path, '{"workers": 2,')
        p = self.run_veer("check", "-c", path)
        self.assertEqual(p.returncode, 1)
        self.assertTrue(p.stderr.strip(), "no error message for a file that is not JSON")

    def test_version(self):
        p = self.run_veer("version")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertRegex(p.stdout + p.stderr, r"\d+\.\d+\.\d+")


if __name__ == "__main__":
    harness.main()
