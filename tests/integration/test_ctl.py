"""`veer ctl` against a running veer: the status table (routes, weights,
shares, generation), weights (applied as GET /v1/routes shows, a stale
--if-generation refused with the server's message), an unknown route or
cluster (exit 1 and the server's JSON "error" on stderr), bad usage (exit 2),
the bearer token (401 without --token-file, 403 with a wrong one, success with
the right one), reload (good, and an invalid config with its errors), drain
(veer exits 0), $VEER_ADMIN and http:// addresses, and an unreachable admin
API (exit 3 with a clear message)."""

import os
import re
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import MockPod, Veer, base_config, free_port  # noqa: E402

PODS = {}


def setUpModule():
    harness.require_binaries()
    PODS["blue-1"] = MockPod("blue-1")
    PODS["canary-1"] = MockPod("canary-1")


def config(**top):
    clusters = {"blue": [PODS["blue-1"].addr], "canary": [PODS["canary-1"].addr]}
    routes = [
        {"name": "embed", "match": {"path_prefix": "/api/v1/embed"},
         "split": [{"cluster": "blue", "weight": 90}, {"cluster": "canary", "weight": 10}]},
        {"name": "grpc", "match": {"path_prefix": "/akidb.v1.Embed/"}, "split": [{"cluster": "blue", "weight": 100}]},
    ]
    return base_config(clusters, routes, **top)


def ctl(*args, env=None, timeout=20):
    e = dict(os.environ)
    e.pop("VEER_ADMIN", None)
    e.update(env or {})
    p = subprocess.run([harness.VEER_BIN, "ctl"] + list(args), capture_output=True, text=True, timeout=timeout, env=e)
    return p.returncode, p.stdout, p.stderr


class CtlTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.veer = Veer(config())
        cls.admin = "127.0.0.1:%d" % cls.veer.admin_port

    @classmethod
    def tearDownClass(cls):
        cls.veer.stop()

    def run_ok(self, *args, **kw):
        rc, out, err = ctl("--admin", self.admin, *args, **kw)
        self.assertEqual(rc, 0, (args, out, err))
        return out

    def table(self, out):
        """Rows of the status table as lists of cells (split on 2+ spaces), header first."""
        lines = out.splitlines()
        start = next(i for i, line in enumerate(lines) if line.startswith("ROUTE"))
        return [re.split(r"\s{2,}", line.strip()) for line in lines[start:] if line.strip()]

    def test_status_table(self):
        self.veer.set_weights("embed", {"blue": 90, "canary": 10})
        out = self.run_ok("status")
        gen = self.veer.generation()
        self.assertRegex(out.splitlines()[0], r"^veer \S+  generation %d  up " % gen)
        rows = self.table(out)
        self.assertEqual(rows[0], ["ROUTE", "CLUSTER", "WEIGHT", "SHARE", "SUCCESS", "P99", "RATE", "CANARY"])
        self.assertEqual(rows[1][:4], ["embed", "blue", "90", "90.0%"])
        self.assertEqual(rows[2][:3], ["canary", "10", "10.0%"])  # same route: the route cell is blank
        self.assertEqual(rows[3][:4], ["grpc", "blue", "100", "100.0%"])
        self.assertEqual(len(rows), 4)

    def test_weights_applied(self):
        out = self.run_ok("weights", "embed", "blue=80", "canary=20")
        gen = self.veer.generation()
        self.assertEqual(out.strip(), "embed: blue=80 canary=20  (generation %d)" % gen)
        self.assertEqual(self.veer.weights("embed"), {"blue": 80, "canary": 20})
        # options may follow the command; a current generation passes
        out = self.run_ok("weights", "embed", "blue=70", "canary=30", "--if-generation", str(gen))
        self.assertIn("blue=70 canary=30", out)
        self.assertEqual(self.veer.weights("embed"), {"blue": 70, "canary": 30})
        rows = self.table(self.run_ok("status"))
        self.assertEqual(rows[1][:4], ["embed", "blue", "70", "70.0%"])
        self.assertEqual(rows[2][:3], ["canary", "30", "30.0%"])

    def test_stale_generation_refused_with_server_message(self):
        gen = self.veer.generation()
        self.run_ok("weights", "embed", "blue=60", "canary=40")
        st, js = self.veer.set_weights("embed", {"blue": 1}, if_generation=gen)
        self.assertEqual(st, 409)
        rc, out, err = ctl("--admin", self.admin, "weights", "embed", "blue=1", "--if-generation", str(gen))
        self.assertEqual(rc, 1, (out, err))
        self.assertIn("409 " + js["error"], err)
        self.assertEqual(self.veer.weights("embed"), {"blue": 60, "canary": 40})

    def test_unknown_route_and_cluster(self):
        st, js = self.veer.set_weights("nope", {"blue": 1})
        rc, out, err = ctl("--admin", self.admin, "weights", "nope", "blue=1")
        self.assertEqual((rc, out), (1, ""))
        self.assertIn("404 " + js["error"], err)
        self.assertIn('unknown route "nope"', err)
        st, js = self.veer.set_weights("embed", {"gren": 1})
        self.assertEqual(st, 400)
        rc, out, err = ctl("--admin", self.admin, "weights", "embed", "gren=1")
        self.assertEqual(rc, 1)
        self.assertIn("400 " + js["error"], err)

    def test_usage_errors(self):
        for args in (["weights", "embed"], ["weights", "embed", "blue"], ["weights", "embed", "blue=x"],
                     ["weights", "embed", "=5"], ["bogus"], [], ["status", "extra"], ["reload", "--force"],
                     ["status", "--nope"]):
            rc, out, err = ctl("--admin", self.admin, *args)
            self.assertEqual(rc, 2, (args, out, err))
            self.assertTrue(err.strip(), args)
        rc, out, _ = ctl("--help")
        self.assertEqual(rc, 0)
        self.assertIn("weights ROUTE CLUSTER=WEIGHT", out)

    def test_admin_from_env_and_url(self):
        rc, out, err = ctl("status", env={"VEER_ADMIN": self.admin})
        self.assertEqual(rc, 0, err)
        self.assertIn("embed", out)
        rc, out, err = ctl("--admin", "http://%s/" % self.admin, "status")
        self.assertEqual(rc, 0, err)

    def test_unreachable(self):
        port = free_port()
        rc, out, err = ctl("--admin", "127.0.0.1:%d" % port, "status")
        self.assertEqual(rc, 3, (out, err))
        self.assertIn("cannot reach the admin API at 127.0.0.1:%d" % port, err)
        self.assertIn("Connection refused", err)
        rc, out, err = ctl("status", env={"VEER_ADMIN": "127.0.0.1:%d" % port})
        self.assertEqual(rc, 3)
        rc, out, err = ctl("--admin", "no-port-here", "status")
        self.assertEqual(rc, 2)
        self.assertIn("invalid admin address", err)


class CtlAuthTest(unittest.TestCase):
    def test_token(self):
        token = os.path.join(harness.TMP, "admin.token")
        with open(token, "w") as f:
            f.write("s3cret-token\n")
        wrong = os.path.join(harness.TMP, "wrong.token")
        with open(wrong, "w") as f:
            f.write("not-it")
        veer = Veer(config(admin={"address": "127.0.0.1:%d" % free_port(), "token_file": token}))
        admin = "127.0.0.1:%d" % veer.admin_port
        try:
            st, js = veer.set_weights("embed", {"blue": 50, "canary": 50})
            self.assertEqual(st, 401)
            rc, out, err = ctl("--admin", admin, "weights", "embed", "blue=50", "canary=50")
            self.assertEqual(rc, 1)
            self.assertIn("401 " + js["error"], err)
            rc, out, err = ctl("--admin", admin, "--token-file", wrong, "weights", "embed", "blue=50", "canary=50")
            self.assertEqual(rc, 1)
            self.assertIn("403 invalid token", err)
            rc, out, err = ctl("--admin", admin, "--token-file", token, "weights", "embed", "blue=50", "canary=50")
            self.assertEqual(rc, 0, err)
            self.assertEqual(veer.weights("embed"), {"blue": 50, "canary": 50})
            rc, out, err = ctl("--admin", admin, "status")  # reads stay open
            self.assertEqual(rc, 0, err)
            rc, out, err = ctl("--admin", admin, "--token-file", os.path.join(harness.TMP, "missing"), "status")
            self.assertEqual(rc, 2)
            self.assertIn("No such file", err)
        finally:
            veer.stop()


class CtlReloadDrainTest(unittest.TestCase):
    def test_reload_and_drain(self):
        cfg = config()
        veer = Veer(cfg)
        admin = "127.0.0.1:%d" % veer.admin_port
        try:
            gen = veer.generation()
            rc, out, err = ctl("--admin", admin, "reload")
            self.assertEqual(rc, 0, err)
            self.assertEqual(out.strip(), "reloaded (generation %d)" % veer.generation())
            self.assertGreaterEqual(veer.generation(), gen)
            bad = dict(cfg)
            bad["routes"] = [dict(cfg["routes"][0], split=[{"cluster": "gren", "weight": 1}])]
            veer.write_config(bad)
            rc, out, err = ctl("--admin", admin, "reload")
            self.assertEqual(rc, 1)
            self.assertIn("400 invalid config", err)
            self.assertIn('routes[0].split[0].cluster: unknown cluster "gren"', err)
            veer.write_config(cfg)
            rc, out, err = ctl("--admin", admin, "drain")
            self.assertEqual(rc, 0, err)
            self.assertIn("draining", out)
            veer.proc.wait(10 * harness.SLOW)
            self.assertEqual(veer.proc.returncode, 0)
        finally:
            veer.stop()


if __name__ == "__main__":
    harness.main()
