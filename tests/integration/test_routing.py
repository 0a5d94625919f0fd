"""Routing: weighted split, overrides, sticky keys (and their monotonicity as
the canary grows), route matching (order, method, headers, host) and the 404
for a request no route takes. Which pod answered is read from `x-pod`."""

import collections
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import EMBED_BODY, Veer, base_config, cluster_of, fan_out  # noqa: E402

PODS = {}


def setUpModule():
    harness.require_binaries()
    for name in ("blue-1", "blue-2", "canary-1", "green-1"):
        PODS[name] = harness.MockPod(name)


def clusters():
    return {
        "blue": {"endpoints": [PODS["blue-1"].addr, PODS["blue-2"].addr], "lb": "round_robin",
                 "connect_timeout": "1s"},
        "canary": {"endpoints": [PODS["canary-1"].addr]},
        "green": {"endpoints": [PODS["green-1"].addr]},
    }


OVERRIDES = [{"header": "x-canary", "equals": "always", "cluster": "canary"},
             {"cookie": "veer-pool", "equals": "canary", "cluster": "canary"}]


def split(**w):
    return [{"cluster": c, "weight": v} for c, v in w.items()]


def embed_route():
    return {"name": "embed", "match": {"path_prefix": "/api/v1/embed"},
            "split": split(blue=90, canary=10), "overrides": OVERRIDES,
            "sticky": {"header": "x-user-id"}, "timeout": "10s"}


def routes():
    return [
        # the embed path again, taken only with x-route: zero (header match)
        {"name": "zero", "match": {"path_prefix": "/api/v1/embed",
                                   "headers": [{"name": "x-route", "exact": "zero"}]},
         "split": split(blue=100, canary=0), "overrides": OVERRIDES},
        {"name": "zero-first", "match": {"path_prefix": "/api/v1/embed",
                                         "headers": [{"name": "x-route", "exact": "zero-first"}]},
         "split": split(blue=0, canary=100)},
        embed_route(),
        {"name": "by-method", "match": {"path": "/m", "method": "POST"}, "split": split(canary=100)},
        {"name": "m-any", "match": {"path": "/m"}, "split": split(blue=100)},
        {"name": "hdr-prefix", "match": {"path_prefix": "/h", "headers": [{"name": "x-tier", "prefix": "gold"}]},
         "split": split(canary=100)},
        {"name": "hdr-exact", "match": {"path_prefix": "/h", "headers": [{"name": "x-tier", "exact": "silver"}]},
         "split": split(green=100)},
        {"name": "hdr-present", "match": {"path_prefix": "/h", "headers": [{"name": "x-flag", "present": True}]},
         "split": split(blue=100)},
        {"name": "order-a", "match": {"path_prefix": "/order/a"}, "split": split(canary=100)},
        {"name": "order", "match": {"path_prefix": "/order"}, "split": split(blue=100)},
        {"name": "o2", "match": {"path_prefix": "/o2"}, "split": split(blue=100)},
        {"name": "o2-a", "match": {"path_prefix": "/o2/a"}, "split": split(canary=100)},
        {"name": "host", "match": {"host": "canary.example.com", "path_prefix": "/host"}, "split": split(canary=100)},
        {"name": "host-any", "match": {"path_prefix": "/host"}, "split": split(blue=100)},
        {"name": "sticky-client", "match": {"path_prefix": "/client"}, "split": split(blue=50, canary=50),
         "sticky": {"client_address": True}},
        {"name": "sticky-cookie", "match": {"path_prefix": "/cookie"}, "split": split(blue=50, canary=50),
         "sticky": {"cookie": "uid"}},
        # no catch-all route: anything else is a 404
    ]


def embed(veer, headers=None):
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    st, hd, body = veer.request("POST", "/api/v1/embed", EMBED_BODY, h)
    return st, hd.get("x-pod")


class RoutingTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.veer = Veer(base_config(clusters(), routes()))

    def pod_of(self, method, path, headers=None, body=None):
        st, hd, data = self.veer.request(method, path, body, headers)
        self.assertIn("x-pod", hd, "%s %s -> %s, no x-pod (local reply?): %r" % (method, path, st, data[:200]))
        return cluster_of(hd["x-pod"])

    def test_split_90_10(self):
        n = 2000
        res = fan_out(self.veer.port, n, "POST", "/api/v1/embed", EMBED_BODY,
                      {"Content-Type": "application/json"}, threads=4)
        bad = [r for r in res if r[1] != 200]
        self.assertEqual(bad[:5], [], "%d of %d requests failed" % (len(bad), n))
        pods = collections.Counter(r[2] for r in res)
        by_cluster = collections.Counter()
        for p, c in pods.items():
            by_cluster[cluster_of(p)] += c
        canary = by_cluster["canary"] / n
        self.assertAlmostEqual(canary, 0.10, delta=0.03, msg="canary share %.3f, pods %r" % (canary, pods))
        self.assertEqual(set(by_cluster), {"blue", "canary"}, pods)
        # round_robin over both blue endpoints
        self.assertGreater(pods["blue-1"], 0.3 * by_cluster["blue"], pods)
        self.assertGreater(pods["blue-2"], 0.3 * by_cluster["blue"], pods)

    def test_override_header_at_weight_zero(self):
        for i in range(30):
            st, pod = embed(self.veer, {"x-route": "zero", "x-canary": "always"})
            self.assertEqual((st, cluster_of(pod)), (200, "canary"), "request %d" % i)
        # a different value is not the override: weight 0 means never canary
        for i in range(30):
            st, pod = embed(self.veer, {"x-route": "zero", "x-canary": "sometimes"})
            self.assertEqual((st, cluster_of(pod)), (200, "blue"), "request %d" % i)

    def test_override_cookie_at_weight_zero(self):
        for cookie in ("veer-pool=canary", "a=1; veer-pool=canary; b=2", "session=xyz; veer-pool=canary"):
            for i in range(10):
                st, pod = embed(self.veer, {"x-route": "zero", "Cookie": cookie})
                self.assertEqual((st, cluster_of(pod)), (200, "canary"), "cookie %r" % cookie)
        for cookie in ("veer-pool=blue", "xveer-pool=canary", "a=veer-pool=canary"):
            for i in range(10):
                st, pod = embed(self.veer, {"x-route": "zero", "Cookie": cookie})
                self.assertEqual((st, cluster_of(pod)), (200, "blue"), "cookie %r" % cookie)

    def test_override_wins_on_weighted_route(self):
        res = fan_out(self.veer.port, 100, "POST", "/api/v1/embed", EMBED_BODY,
                      {"Content-Type": "application/json", "x-canary": "always"}, threads=2)
        self.assertEqual(collections.Counter((r[1], cluster_of(r[2])) for r in res), {(200, "canary"): 100})

    def test_weight_zero_never_served(self):
        res = fan_out(self.veer.port, 400, "POST", "/api/v1/embed", EMBED_BODY,
                      {"Content-Type": "application/json", "x-route": "zero"}, threads=4)
        self.assertEqual(collections.Counter((r[1], cluster_of(r[2])) for r in res), {(200, "blue"): 400})
        res = fan_out(self.veer.port, 400, "POST", "/api/v1/embed", EMBED_BODY,
                      {"Content-Type": "application/json", "x-route": "zero-first"}, threads=4)
        self.assertEqual(collections.Counter((r[1], cluster_of(r[2])) for r in res), {(200, "canary"): 400})

    def test_sticky_header_same_user_same_cluster(self):
        users = ["user-%d" % i for i in range(300)]
        seen = collections.defaultdict(set)
        for rnd in range(3):
            res = fan_out(self.veer.port, len(users), "POST", "/api/v1/embed", EMBED_BODY,
                          lambda i: {"Content-Type": "application/json", "x-user-id": users[i]}, threads=4)
            for i, st, pod in res:
                self.assertEqual(st, 200, pod)
                seen[users[i]].add(cluster_of(pod))
        flapping = {u: c for u, c in seen.items() if len(c) > 1}
        self.assertEqual(flapping, {}, "sticky users changed cluster")
        on_canary = sum(1 for c in seen.values() if c == {"canary"})
        # 10% of 300 users, loosely: the hash must spread keys, not pin them
        self.assertTrue(8 <= on_canary <= 60, "%d of 300 sticky users on canary at 10%%" % on_canary)

    def test_sticky_client_address(self):
        res = fan_out(self.veer.port, 60, "GET", "/client/x", threads=3)
        got = collections.Counter(cluster_of(r[2]) for r in res)
        self.assertEqual(len(got), 1, "client_address sticky spread one client over %r" % got)

    def test_sticky_cookie(self):
        for u in range(20):
            got = {self.pod_of("GET", "/cookie/x", {"Cookie": "other=1; uid=u%d" % u}) for _ in range(6)}
            self.assertEqual(len(got), 1, "uid=u%d went to %r" % (u, got))

    def test_no_route_404_json(self):
        for method, path, headers in (("GET", "/nothing/here", {}), ("GET", "/", {}),
                                      ("POST", "/m/x", {}),   # "path" is exact, not a prefix
                                      ("GET", "/h", {}),      # header matches all fail
                                      ("GET", "/h", {"x-tier": "silverish"})):
            st, hd, body = self.veer.request(method, path, b"" if method == "POST" else None, headers)
            self.assertEqual(st, 404, "%s %s %r" % (method, path, body))
            self.assertNotIn("x-pod", hd, "404 must be a local reply")
            js = harness.json.loads(body)
            self.assertIn("error", js)

    def test_route_order_first_match_wins(self):
        self.assertEqual(self.pod_of("GET", "/order/a/1"), "canary")
        self.assertEqual(self.pod_of("GET", "/order/b"), "blue")
        # /o2 is listed before /o2/a: the longer prefix never gets a chance
        for _ in range(5):
            self.assertEqual(self.pod_of("GET", "/o2/a/1"), "blue")

    def test_method_match(self):
        self.assertEqual(self.pod_of("POST", "/m", body=b"x"), "canary")
        self.assertEqual(self.pod_of("GET", "/m"), "blue")
        self.assertEqual(self.pod_of("PUT", "/m", body=b"x"), "blue")

    def test_header_match(self):
        self.assertEqual(self.pod_of("GET", "/h", {"x-tier": "gold"}), "canary")
        self.assertEqual(self.pod_of("GET", "/h", {"x-tier": "goldfish"}), "canary")
        self.assertEqual(self.pod_of("GET", "/h", {"X-TIER": "gold"}), "canary")  # names are case-insensitive
        self.assertEqual(self.pod_of("GET", "/h", {"x-tier": "silver"}), "green")
        self.assertEqual(self.pod_of("GET", "/h", {"x-tier": "silverish", "x-flag": "1"}), "blue")
        self.assertEqual(self.pod_of("GET", "/h", {"x-flag": "yes"}), "blue")

    def test_host_match(self):
        self.assertEqual(self.pod_of("GET", "/host", {"Host": "canary.example.com"}), "canary")
        self.assertEqual(self.pod_of("GET", "/host", {"Host": "canary.example.com:8080"}), "canary")
        self.assertEqual(self.pod_of("GET", "/host", {"Host": "Canary.Example.COM"}), "canary")
        self.assertEqual(self.pod_of("GET", "/host", {"Host": "blue.example.com"}), "blue")
        self.assertEqual(self.pod_of("GET", "/host"), "blue")


class StickyMonotoneTest(unittest.TestCase):
    """A user on the canary at 10% is still on it at 20% (after a PUT)."""

    def test_canary_users_stay_when_weight_grows(self):
        veer = Veer(base_config(clusters(), [embed_route()]))
        users = ["mono-%d" % i for i in range(500)]

        def assign():
            res = fan_out(veer.port, len(users), "POST", "/api/v1/embed", EMBED_BODY,
                          lambda i: {"Content-Type": "application/json", "x-user-id": users[i]}, threads=4)
            bad = [r for r in res if r[1] != 200]
            self.assertEqual(bad[:3], [])
            return {users[i]: cluster_of(pod) for i, _, pod in res}

        before = assign()
        st, js = veer.set_weights("embed", {"blue": 80, "canary": 20})
        self.assertEqual(st, 200, js)
        after = assign()
        canary_before = {u for u, c in before.items() if c == "canary"}
        canary_after = {u for u, c in after.items() if c == "canary"}
        self.assertTrue(canary_before, "no user on the canary at 10%")
        self.assertEqual(canary_before - canary_after, set(),
                         "users moved off the canary when its weight grew 10 -> 20")
        self.assertGreater(len(canary_after), len(canary_before) + 10,
                           "canary users %d -> %d for 10%% -> 20%%" % (len(canary_before), len(canary_after)))
        # and the same assignment is stable at 20%
        self.assertEqual(assign(), after)
        veer.stop()


if __name__ == "__main__":
    harness.main()
