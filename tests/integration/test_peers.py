"""Multi-replica weights (config "peers"): three veer processes, a leader
(peers.leader true) whose peers are the other two's admin APIs, two followers
(peers.leader false) listing the other two, one bearer token on all. An
operator PUT on the leader reaches the peers with the same generation; a
follower answers 409 to canary starts and verbs and to an operator PUT
without "force" (which applies to it alone), resumes no saved run, shows
leader false in /v1/status, GET canary and veer_canary_leader, and cannot
change its role on reload; a host-name leader leads on the host of that name
only; a canary run steps
and promotes on every replica in lockstep; a stopped peer pauses the run with
its address as the reason and shows its lag in /v1/status and /metrics, and
catches up once restarted; a peer's PUT with "generation" adopts newer
generations, answers 409 for a stale one with other weights and 200 for a
retry, and needs the token; config errors for "peers" and canary "source".
A peer entry that is a DNS name (`localhost`, given 127.0.0.1 and ::1 by a
hosts file bound over /etc/hosts in the leader's own mount namespace) is one
peer per address: a change reaches both, an address that appears later
catches up within `refresh` + 1 s, one that disappears is dropped."""

import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import SLOW, Veer, base_config, free_port, wait_until  # noqa: E402
from test_canary import Load, canary, policy, wait_phase  # noqa: E402

PODS = {}
POD_NAMES = ("blue-1", "green-1")
TOKEN = "peer-secret-token-1"


def setUpModule():
    harness.start_pods(PODS, POD_NAMES)


def token_file():
    path = os.path.join(harness.TMP, "token")
    with open(path, "w") as f:
        f.write(TOKEN + "\n")
    return path


def config(name, peers=None):
    clusters = {"blue": [PODS["blue-1"].addr], "green": [PODS["green-1"].addr]}
    routes = [{"name": "embed", "match": {"path_prefix": "/api/v1/embed"},
               "split": [{"cluster": "blue", "weight": 100}, {"cluster": "green", "weight": 0}]}]
    cfg = base_config(clusters, routes, state_file=os.path.join(harness.TMP, "%s-%d.state" % (name, time.time_ns())))
    cfg["admin"]["token_file"] = token_file()
    if peers is not None:
        cfg["peers"] = peers
    return cfg


def follower_peers(*admin_ports):
    """A follower's peers block: the shared peer list, and it does not lead."""
    return {"admins": ["127.0.0.1:%d" % p for p in admin_ports], "token_file": token_file(), "timeout": "300ms",
            "retries": 2, "leader": False}


FOLLOWER_409 = "this replica follows the canary leader (peers.leader is false): start and steer runs on the leader"


def leader_gauge(v):
    m = re.search(r"^veer_canary_leader (\d+)$", v.admin("GET", "/metrics")[1], re.M)
    assert m is not None, "no veer_canary_leader sample"
    return int(m.group(1))


def peer_entry(leader, peer):
    for p in leader.status()["peers"]:
        if p["admin"] == "127.0.0.1:%d" % peer.admin_port:
            return p
    raise AssertionError("peer %d not in the leader's status: %s" % (peer.admin_port, leader.status()["peers"]))


def lag_metric(leader, peer):
    text = leader.admin("GET", "/metrics")[1]
    m = re.search(r'veer_peer_generation_lag\{peer="127\.0\.0\.1:%d"\} (\d+)' % peer.admin_port, text)
    assert m is not None, "no veer_peer_generation_lag for the peer"
    return int(m.group(1))


class PeersTest(unittest.TestCase):
    def setUp(self):
        for p in PODS.values():
            p.fault(error_rate=0, latency="0ms", latency_p99="0ms")
        self.load = None
        # the followers list the leader and each other, as replicas sharing one peer list do
        cfgs = [config("peer%d" % i) for i in range(2)]
        lport = free_port()
        ports = [int(c["admin"]["address"].rsplit(":", 1)[1]) for c in cfgs]
        for i, c in enumerate(cfgs):
            c["peers"] = follower_peers(lport, ports[1 - i])
        self.peers = [Veer(c, name="peer%d" % i) for i, c in enumerate(cfgs)]
        lcfg = config("leader", {"admins": ["127.0.0.1:%d" % p.admin_port for p in self.peers],
                                 "token_file": token_file(), "timeout": "300ms", "retries": 2, "leader": True})
        lcfg["admin"]["address"] = "127.0.0.1:%d" % lport
        self.leader = Veer(lcfg, name="leader")

    def tearDown(self):
        if self.load is not None:
            self.load.stop()
        for v in [self.leader] + self.peers:
            if v.alive():
                v.stop()

    def in_sync(self, route="embed"):
        want = (self.leader.weights(route), self.leader.generation())
        return all((p.weights(route), p.generation()) == want for p in self.peers)

    def test_operator_put_reaches_every_peer_with_the_same_generation(self):
        L = self.leader
        st, js = L.set_weights("embed", {"blue": 70, "green": 30}, token=TOKEN)
        self.assertEqual(st, 200, js)
        gen = js["generation"]
        t0 = time.time()
        wait_until(self.in_sync, 1.0 * SLOW, what="peers at the leader's weights and generation")
        self.assertLess(time.time() - t0, 1.0 * SLOW)
        for p in self.peers:
            self.assertEqual(p.weights("embed"), {"blue": 70, "green": 30})
            self.assertEqual(p.generation(), gen)
        # a second change, and the leader's view of its peers
        st, js = L.set_weights("embed", {"blue": 40, "green": 60}, token=TOKEN)
        self.assertEqual(st, 200, js)
        wait_until(self.in_sync, 1.0 * SLOW, what="second change on the peers")
        wait_until(lambda: all(peer_entry(L, p)["last_generation_acked"] == js["generation"] for p in self.peers),
                   1.0 * SLOW, what="acks recorded")
        for p in self.peers:
            e = peer_entry(L, p)
            self.assertEqual((e["lag"], e["last_error"]), (0, None))
            self.assertEqual(lag_metric(L, p), 0)
        # one JSON line per peer per change
        acked = [o for o in L.json_log_lines() if o.get("msg") == "peer" and o.get("result") == "acked"]
        self.assertEqual(len(acked), 4, acked)
        self.assertEqual(sorted(o["generation"] for o in acked), sorted([gen, gen, js["generation"], js["generation"]]))
        # a peer does not pass a leader's change on: its own status lists no peers
        self.assertEqual(self.peers[0].status()["peers"], [])

    def test_canary_run_steps_and_promotes_on_every_replica(self):
        L = self.leader
        self.load = Load(L.port)
        seen = set()
        st, js = L.admin("POST", "/v1/routes/embed/canary", policy(), token=TOKEN)
        self.assertEqual(st, 200, js)
        deadline = time.time() + 15 * SLOW
        while time.time() < deadline and canary(L)["phase"] != "succeeded":
            for p in self.peers:
                seen.add(tuple(sorted(p.weights("embed").items())))
            time.sleep(0.03)
        self.assertEqual(canary(L)["phase"], "succeeded")
        wait_until(self.in_sync, 1.0 * SLOW, what="peers promoted")
        for p in self.peers:
            self.assertEqual(p.weights("embed"), {"blue": 0, "green": 100})
        # the peers only ever held weights the leader's run went through (25, 50, promoted)
        allowed = {(("blue", 100), ("green", 0)), (("blue", 75), ("green", 25)), (("blue", 50), ("green", 50)),
                   (("blue", 0), ("green", 100))}
        self.assertTrue(seen <= allowed, seen - allowed)
        self.assertIn((("blue", 50), ("green", 50)), seen)

    def test_stopped_peer_pauses_the_run_and_catches_up(self):
        L, up, down = self.leader, self.peers[0], self.peers[1]
        addr = "127.0.0.1:%d" % down.admin_port
        down.stop()
        self.load = Load(L.port)
        st, js = L.admin("POST", "/v1/routes/embed/canary", policy(step_weight=10, max_weight=90), token=TOKEN)
        self.assertEqual(st, 200, js)
        run = wait_phase(L, "paused", 5)
        self.assertIn("peer %s unreachable" % addr, json.dumps(run))
        held = run["weight"]
        self.assertLess(held, 90)
        e = peer_entry(L, down)
        self.assertGreater(e["lag"], 0)
        self.assertIsNotNone(e["last_error"])
        self.assertEqual(e["state"], "unreachable")
        self.assertGreater(lag_metric(L, down), 0)
        # the reachable peer holds the leader's weights; the run stays paused
        wait_until(lambda: up.weights("embed") == L.weights("embed"), 1.0 * SLOW, what="the live peer in sync")
        time.sleep(0.8)
        self.assertEqual(canary(L)["phase"], "paused")
        self.assertEqual(canary(L)["weight"], held)
        # the peer comes back: the leader's retries deliver the change it missed
        down.start()
        wait_until(lambda: peer_entry(L, down)["lag"] == 0, 5 * SLOW, what="the restarted peer catching up")
        self.assertEqual(down.weights("embed"), L.weights("embed"))
        self.assertEqual(down.generation(), L.generation())
        self.assertEqual(lag_metric(L, down), 0)
        st, js = L.admin("POST", "/v1/routes/embed/canary/resume", token=TOKEN)
        self.assertEqual(st, 200, js)
        wait_phase(L, "succeeded", 15)
        wait_until(self.in_sync, 1.0 * SLOW, what="every replica promoted")
        self.assertEqual(down.weights("embed"), {"blue": 0, "green": 100})
        logged = [o for o in L.json_log_lines() if o.get("msg") == "peer" and o.get("peer") == addr]
        self.assertIn("unreachable", [o["result"] for o in logged])
        self.assertEqual(logged[-1]["result"], "acked")

    def test_a_shared_peer_list_naming_this_replica_is_skipped(self):
        # every replica may share one config listing all of them: the leader
        # recognises its own admin API by its instance id and sends it nothing
        cfg = config("self")
        port = harness.free_port()
        cfg["admin"]["address"] = "0.0.0.0:%d" % port
        cfg["peers"] = {"admins": ["127.0.0.1:%d" % port, "127.0.0.1:%d" % self.peers[0].admin_port],
                        "token_file": token_file(), "timeout": "300ms", "retries": 1, "leader": True}
        v = Veer(cfg, name="self")
        try:
            for weights in ({"blue": 30, "green": 70}, {"blue": 20, "green": 80}, {"blue": 10, "green": 90}):
                st, js = v.set_weights("embed", weights, token=TOKEN)
                self.assertEqual(st, 200, js)
            gen = js["generation"]
            wait_until(lambda: (self.peers[0].weights("embed"), self.peers[0].generation()) ==
                       ({"blue": 10, "green": 90}, gen), 1.0 * SLOW, what="the other peer in sync")
            entries = {e["admin"]: e for e in v.status()["peers"]}
            me = entries["127.0.0.1:%d" % port]
            self.assertEqual((me["state"], me["lag"], me["last_error"]), ("self", 0, None))
            wait_until(lambda: {e["admin"]: e for e in v.status()["peers"]}[
                "127.0.0.1:%d" % self.peers[0].admin_port]["state"] == "in_sync", 1.0 * SLOW, what="in_sync")
            self.assertEqual(v.generation(), gen)
            self.assertEqual(v.weights("embed"), {"blue": 10, "green": 90})
        finally:
            v.stop()

    def test_generation_on_a_peer_is_adopted_checked_and_authenticated(self):
        p = self.peers[0]
        g0 = p.generation()
        st, js = p.set_weights("embed", {"blue": 70, "green": 30}, token=TOKEN, generation=g0 + 50)
        self.assertEqual((st, js["generation"]), (200, g0 + 50), js)
        self.assertEqual(p.generation(), g0 + 50)
        # stale generation with other weights: 409
        st, js = p.set_weights("embed", {"blue": 60, "green": 40}, token=TOKEN, generation=g0 + 40)
        self.assertEqual(st, 409, js)
        self.assertIn("stale", js["error"])
        self.assertEqual(p.weights("embed"), {"blue": 70, "green": 30})
        # a retry of what is applied: 200 at the current generation
        for g in (g0 + 50, g0 + 49):
            st, js = p.set_weights("embed", {"blue": 70, "green": 30}, token=TOKEN, generation=g)
            self.assertEqual((st, js["generation"]), (200, g0 + 50), js)
        # the same auth as any mutation
        st, js = p.set_weights("embed", {"blue": 10, "green": 90}, generation=g0 + 60)
        self.assertEqual(st, 401, js)
        st, js = p.set_weights("embed", {"blue": 10, "green": 90}, token="wrong", generation=g0 + 60)
        self.assertEqual(st, 403, js)
        self.assertEqual(p.generation(), g0 + 50)
        for bad in ({"generation": 0}, {"generation": -1}, {"generation": "7"},
                    {"generation": g0 + 70, "if_generation": g0 + 50}):
            st, js = p.set_weights("embed", {"blue": 10, "green": 90}, token=TOKEN, **bad)
            self.assertEqual(st, 400, (bad, js))
        # a newer one is adopted; a forced operator PUT goes on from there
        st, js = p.set_weights("embed", {"blue": 10, "green": 90}, token=TOKEN, generation=g0 + 60)
        self.assertEqual((st, js["generation"]), (200, g0 + 60))
        st, js = p.set_weights("embed", {"blue": 20, "green": 80}, token=TOKEN, force=True)
        self.assertEqual((st, js["generation"]), (200, g0 + 61))

    def test_the_leaders_numbering_wins_on_a_follower(self):
        L, F = self.leader, self.peers[0]
        # a reload of the follower alone bumps its generation past the leader's
        # (a ConfigMap reaches pods up to a minute apart); the leader's next
        # change is still taken, with the leader's number
        self.assertEqual(F.admin("POST", "/v1/reload", token=TOKEN)[0], 200)
        self.assertEqual(F.generation(), L.generation() + 1)
        st, js = L.set_weights("embed", {"blue": 85, "green": 15}, token=TOKEN)
        self.assertEqual(st, 200, js)
        wait_until(lambda: (F.weights("embed"), F.generation()) == ({"blue": 85, "green": 15}, js["generation"]),
                   1.0 * SLOW, what="the leader's change on the reloaded follower")
        self.assertEqual(peer_entry(L, F)["last_error"], None)
        # a restarted leader (another instance id) that lost its state starts
        # its numbering again: the follower goes with it
        self.assertGreater(F.generation(), 1)
        st, js = F.admin("PUT", "/v1/routes/embed/weights", {"weights": {"blue": 95, "green": 5}, "generation": 1},
                         token=TOKEN, headers={"X-Veer-Instance": "f" * 32})
        self.assertEqual((st, js.get("generation")), (200, 1), js)
        self.assertEqual((F.weights("embed"), F.generation()), ({"blue": 95, "green": 5}, 1))
        # ... and that instance's changes are checked in its own order: a late
        # one with other weights under a number already taken is refused
        st, js = F.admin("PUT", "/v1/routes/embed/weights", {"weights": {"blue": 50, "green": 50}, "generation": 1},
                         token=TOKEN, headers={"X-Veer-Instance": "f" * 32})
        self.assertEqual(st, 409, js)
        self.assertIn("stale", js["error"])
        # two leaders: a change from another leader is refused by a replica that leads
        st, js = L.admin("PUT", "/v1/routes/embed/weights", {"weights": {"blue": 50, "green": 50}, "generation": 999},
                         token=TOKEN, headers={"X-Veer-Instance": "e" * 32})
        self.assertEqual(st, 409, js)
        self.assertIn("this replica leads too", js["error"])
        self.assertNotEqual(L.weights("embed"), {"blue": 50, "green": 50})
        # the real leader's next change brings the follower back to its numbering
        st, js = L.set_weights("embed", {"blue": 100, "green": 0}, token=TOKEN)
        self.assertEqual(st, 200, js)
        wait_until(lambda: (F.weights("embed"), F.generation()) == ({"blue": 100, "green": 0}, js["generation"]),
                   1.0 * SLOW, what="the leader's numbering again")

    def test_a_follower_refuses_runs_and_unforced_weights(self):
        L, F, other = self.leader, self.peers[0], self.peers[1]
        # the roles, as /v1/status, GET canary and /metrics tell them
        self.assertEqual((L.status()["leader"], F.status()["leader"]), (True, False))
        self.assertEqual((canary(L)["leader"], canary(F)["leader"]), (True, False))
        self.assertEqual((leader_gauge(L), leader_gauge(F)), (1, 0))
        # no run starts or is steered on a follower
        st, js = F.admin("POST", "/v1/routes/embed/canary", policy(), token=TOKEN)
        self.assertEqual((st, js), (409, {"error": FOLLOWER_409}))
        for verb in ("pause", "resume", "promote", "abort"):
            st, js = F.admin("POST", "/v1/routes/embed/canary/" + verb, token=TOKEN)
            self.assertEqual((st, js), (409, {"error": FOLLOWER_409}), verb)
        run = canary(F)
        self.assertEqual((run["phase"], run["leader"]), ("idle", False), run)
        self.assertIsNone(F.status()["routes"][0]["canary"])
        # the unknown route is still a 404, as on the leader
        self.assertEqual(F.admin("POST", "/v1/routes/nope/canary", policy(), token=TOKEN)[0], 404)
        # veer ctl prints veer's refusal and exits 1
        r = subprocess.run([harness.VEER_BIN, "ctl", "--admin", "127.0.0.1:%d" % F.admin_port, "--token-file",
                            token_file(), "canary", "embed", "start"], capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn(FOLLOWER_409, r.stdout + r.stderr)
        # and its status header says which replica this is; the leader's does not
        for replica, says in ((F, True), (self.leader, False)):
            r = subprocess.run([harness.VEER_BIN, "ctl", "--admin", "127.0.0.1:%d" % replica.admin_port, "--token-file",
                                token_file(), "status"], capture_output=True, text=True, timeout=30)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertEqual("FOLLOWER (weights and canary runs come from the leader)" in r.stdout.splitlines()[0],
                             says, r.stdout)
        # an operator's PUT needs force, and then changes this replica alone
        g0 = F.generation()
        st, js = F.set_weights("embed", {"blue": 60, "green": 40}, token=TOKEN)
        self.assertEqual(st, 409, js)
        self.assertIn("weights on a follower come from the leader", js["error"])
        self.assertIn('send "force": true to change this replica alone', js["error"])
        self.assertEqual((F.weights("embed"), F.generation()), ({"blue": 100, "green": 0}, g0))
        st, js = F.set_weights("embed", {"blue": 60, "green": 40}, token=TOKEN, force=True)
        self.assertEqual((st, js["generation"]), (200, g0 + 1), js)
        self.assertEqual(F.weights("embed"), {"blue": 60, "green": 40})
        time.sleep(0.5)  # a push would have reached the others by now (it takes a few ms)
        for v in (L, other):
            self.assertEqual(v.weights("embed"), {"blue": 100, "green": 0})
        self.assertEqual(F.status()["peers"], [])
        self.assertEqual([o for o in F.json_log_lines() if o.get("msg") == "peer"], [])
        # the leader's next change replaces the forced one, though the forced
        # one ran the follower's generation ahead: a follower takes the
        # leader's numbering, and then follows as before
        st, js = L.set_weights("embed", {"blue": 80, "green": 20}, token=TOKEN)
        self.assertEqual(st, 200, js)
        self.assertLessEqual(js["generation"], g0 + 1)
        wait_until(lambda: (F.weights("embed"), F.generation()) == ({"blue": 80, "green": 20}, js["generation"]),
                   1.0 * SLOW, what="the leader's change and generation")
        wait_until(lambda: peer_entry(L, F)["lag"] == 0, 1.0 * SLOW, what="the follower's ack")
        self.assertEqual((peer_entry(L, F)["state"], peer_entry(L, F)["last_error"]), ("in_sync", None))
        st, js = L.set_weights("embed", {"blue": 70, "green": 30}, token=TOKEN)
        self.assertEqual(st, 200, js)
        wait_until(lambda: (F.weights("embed"), F.generation()) == ({"blue": 70, "green": 30}, js["generation"]),
                   1.0 * SLOW, what="the next change")
        # an older change of the same leader arriving late is refused
        st, js2 = F.set_weights("embed", {"blue": 10, "green": 90}, token=TOKEN, generation=js["generation"] - 1)
        self.assertEqual(st, 409, js2)
        # the role is taken at start: a reload may not change it, but may restate it
        cfg = dict(F.config)
        cfg["peers"] = dict(cfg["peers"], leader=True)
        F.write_config(cfg)
        st, js = F.admin("POST", "/v1/reload", token=TOKEN)
        self.assertEqual(st, 400, js)
        self.assertIn("peers.leader: cannot change on reload", json.dumps(js))
        self.assertEqual(F.status()["leader"], False)
        cfg["peers"] = dict(cfg["peers"], leader="no-such-host-x")
        F.write_config(cfg)
        st, js = F.admin("POST", "/v1/reload", token=TOKEN)
        self.assertEqual(st, 200, js)
        self.assertEqual(leader_gauge(F), 0)

    def test_promtool_accepts_the_leader_gauge(self):
        promtool = shutil.which("promtool")
        self.assertIsNotNone(promtool, "promtool missing: apt-get install -y prometheus")
        for v in (self.leader, self.peers[0]):
            text = v.admin("GET", "/metrics")[1]
            self.assertIn("# TYPE veer_canary_leader gauge\n", text)
            p = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=30)
            report = (p.stdout + p.stderr).decode()
            self.assertEqual((p.returncode, report.strip()), (0, ""), report)


class LeaderRoleTest(unittest.TestCase):
    """peers.leader on one replica: the host-name form, and a run saved while leading."""

    def setUp(self):
        for p in PODS.values():
            p.fault(error_rate=0, latency="0ms", latency_p99="0ms")
        self.v = None

    def tearDown(self):
        if self.v is not None and self.v.alive():
            self.v.stop()

    def test_the_replica_named_by_host_name_leads(self):
        me = socket.gethostname()
        cfg = config("named", {"admins": ["127.0.0.1:%d" % free_port()], "timeout": "300ms", "retries": 0,
                               "leader": me})
        self.v = v = Veer(cfg, name="named")
        self.assertEqual((v.status()["leader"], canary(v)["leader"], leader_gauge(v)), (True, True, 1))
        st, js = v.admin("POST", "/v1/routes/embed/canary", policy(interval="60s"), token=TOKEN)
        self.assertEqual(st, 200, js)
        st, js = v.admin("POST", "/v1/routes/embed/canary/abort", token=TOKEN)
        self.assertEqual(st, 200, js)
        v.stop()
        cfg["peers"]["leader"] = "no-such-host-x"
        self.v = v = Veer(cfg, name="unnamed")
        self.assertEqual((v.status()["leader"], canary(v)["leader"], leader_gauge(v)), (False, False, 0))
        st, js = v.admin("POST", "/v1/routes/embed/canary", policy(interval="60s"), token=TOKEN)
        self.assertEqual((st, js), (409, {"error": 'this replica follows the canary leader (peers.leader is '
                                                   '"no-such-host-x", this host is "%s"): start and steer runs on '
                                                   'the leader' % me}))
        self.assertEqual(canary(v)["phase"], "idle")

    def test_a_follower_does_not_resume_a_run_saved_while_it_led(self):
        cfg = config("saved")
        self.v = v = Veer(cfg, name="saved")
        st, js = v.admin("POST", "/v1/routes/embed/canary", policy(interval="60s"), token=TOKEN)
        self.assertEqual(st, 200, js)
        st, js = v.admin("POST", "/v1/routes/embed/canary/pause", token=TOKEN)
        self.assertEqual(st, 200, js)
        run = canary(v)
        self.assertEqual(run["phase"], "paused")
        held, gen = v.weights("embed"), v.generation()
        self.assertEqual(held, {"blue": 100 - run["weight"], "green": run["weight"]})
        self.assertGreater(run["weight"], 0)
        v.stop()
        # the same state file, now on a follower: the weights stay, the run is not resumed
        cfg["peers"] = follower_peers(free_port())
        v.write_config(cfg)
        v.start()
        self.assertEqual((v.weights("embed"), v.generation()), (held, gen))
        run = canary(v)
        self.assertEqual((run["phase"], run["leader"]), ("idle", False), run)
        self.assertIn("a paused run is not resumed: this replica follows the canary leader", "".join(v.stderr_lines()))
        # and it stays so: the follower rewrote the state file without the run
        st, js = v.set_weights("embed", held, token=TOKEN, force=True)
        self.assertEqual(st, 200, js)
        v.stop()
        del cfg["peers"]
        v.write_config(cfg)
        v.start()
        self.assertEqual(canary(v)["phase"], "idle")


class V6Veer(Veer):
    """A replica whose admin API listens on [::1] only."""
    admin_host = "::1"


HOSTS = os.path.join(harness.TMP, "hosts")
BOTH = "127.0.0.1 localhost\n::1 localhost\n"
V4_ONLY = "127.0.0.1 localhost\n"


def write_hosts(text):
    # in place: the leader sees this inode through its bind mount
    with open(HOSTS, "r+" if os.path.exists(HOSTS) else "w") as f:
        f.seek(0)
        f.write(text)
        f.truncate()


class HostsVeer(Veer):
    """veer in a private mount namespace with HOSTS bound over /etc/hosts, so
    the test decides what `localhost` resolves to without touching the host."""
    wrapper = None

    def start(self, timeout=None):
        saved = harness.VEER_BIN
        harness.VEER_BIN = self.wrapper
        try:
            return super().start(timeout)
        finally:
            harness.VEER_BIN = saved


class V6HostsVeer(HostsVeer, V6Veer):
    pass


class PeersDnsTest(unittest.TestCase):
    REFRESH = 0.5

    @classmethod
    def setUpClass(cls):
        write_hosts(BOTH)
        unshare = shutil.which("unshare")
        probe = None
        if unshare is not None:
            probe = subprocess.run([unshare, "--mount", "sh", "-c", 'mount --bind "$0" /etc/hosts && getent ahosts '
                                    'localhost', HOSTS], capture_output=True, text=True, timeout=10)
        if probe is None or probe.returncode != 0 or "::1" not in probe.stdout or "127.0.0.1" not in probe.stdout:
            # An environment without mount namespaces or IPv6 loopback cannot
            # stage a name with two addresses: say so loudly in the test log
            # rather than fail the suite on the machine's capabilities.
            raise unittest.SkipTest("this test needs `unshare --mount` and a bind mount over /etc/hosts (root) to make "
                                 "localhost resolve to 127.0.0.1 and ::1 for the leader only; got: %s" %
                                 ("no unshare" if probe is None else (probe.returncode, probe.stdout, probe.stderr)))
        try:
            with socket.socket(socket.AF_INET6) as s:
                s.bind(("::1", 0))
        except OSError as e:
            raise unittest.SkipTest("this test needs to bind [::1] (a peer listens there): %s" % e)
        HostsVeer.wrapper = os.path.join(harness.TMP, "veer-with-hosts")
        with open(HostsVeer.wrapper, "w") as f:
            f.write('#!/bin/sh\nexec %s --mount sh -c \'mount --bind "$0" /etc/hosts && exec "$@"\' %s %s "$@"\n'
                    % (unshare, HOSTS, harness.VEER_BIN))
        os.chmod(HostsVeer.wrapper, 0o755)

    def setUp(self):
        for p in PODS.values():
            p.fault(error_rate=0, latency="0ms", latency_p99="0ms")
        self.port = harness.free_port()  # both peers' admin port, on 127.0.0.1 and [::1]
        self.v4 = self.v6 = self.leader = None

    def tearDown(self):
        for v in (self.leader, self.v4, self.v6):
            if v is not None and v.alive():
                v.stop()

    def start_peer(self, family):
        cfg = config("dns-" + family)
        if family == "v4":
            cfg["admin"]["address"] = "127.0.0.1:%d" % self.port
            return Veer(cfg, name="dns-v4")
        cfg["admin"]["address"] = "[::1]:%d" % self.port
        return V6Veer(cfg, name="dns-v6")

    def start_leader(self):
        return HostsVeer(config("dns-leader", {"admins": ["localhost:%d" % self.port], "token_file": token_file(),
                                               "timeout": "300ms", "retries": 1, "refresh": "500ms",
                                               "leader": True}),
                         name="dns-leader")

    def entries(self):
        return {e["admin"]: e for e in self.leader.status()["peers"]}

    def synced(self, peer):
        return (peer.weights("embed"), peer.generation()) == (self.leader.weights("embed"), self.leader.generation())

    def test_a_name_with_two_addresses_is_two_peers(self):
        write_hosts(BOTH)
        self.v4, self.v6 = self.start_peer("v4"), self.start_peer("v6")
        self.leader = L = self.start_leader()
        want = {"localhost@127.0.0.1:%d" % self.port, "localhost@[::1]:%d" % self.port}
        wait_until(lambda: set(self.entries()) == want, 2 * SLOW, what="both addresses of localhost as peers")
        st, js = L.set_weights("embed", {"blue": 70, "green": 30}, token=TOKEN)
        self.assertEqual(st, 200, js)
        wait_until(lambda: self.synced(self.v4) and self.synced(self.v6), 1.0 * SLOW, what="both peers in sync")
        for p in (self.v4, self.v6):
            self.assertEqual((p.weights("embed"), p.generation()), ({"blue": 70, "green": 30}, js["generation"]))
        wait_until(lambda: all(e["state"] == "in_sync" and e["lag"] == 0 and e["last_generation_acked"] ==
                               js["generation"] for e in self.entries().values()), 1.0 * SLOW, what="acks")
        text = L.admin("GET", "/metrics")[1]
        for admin in want:
            self.assertIn('veer_peer_generation_lag{peer="%s"} 0' % admin, text)
        self.assertIn("veer_peer_changes_discarded_total 0", text)

    def test_an_address_that_appears_catches_up_and_one_that_goes_is_dropped(self):
        write_hosts(V4_ONLY)
        self.v4 = self.start_peer("v4")
        self.leader = L = self.start_leader()
        v4_admin, v6_admin = "localhost@127.0.0.1:%d" % self.port, "localhost@[::1]:%d" % self.port
        wait_until(lambda: set(self.entries()) == {v4_admin}, 2 * SLOW, what="one peer")
        st, js = L.set_weights("embed", {"blue": 60, "green": 40}, token=TOKEN)
        self.assertEqual(st, 200, js)
        wait_until(lambda: self.synced(self.v4), 1.0 * SLOW, what="the v4 peer in sync")
        # a replica starts and DNS starts giving its address: it gets the
        # current weights with the current generation, without a new change
        self.v6 = self.start_peer("v6")
        self.assertEqual(self.v6.weights("embed"), {"blue": 100, "green": 0})
        write_hosts(BOTH)
        t0 = time.time()
        wait_until(lambda: self.synced(self.v6), (self.REFRESH + 1.0) * SLOW, what="the new address caught up")
        self.assertLess(time.time() - t0, (self.REFRESH + 1.0) * SLOW)
        self.assertEqual((self.v6.weights("embed"), self.v6.generation()), ({"blue": 60, "green": 40},
                                                                             js["generation"]))
        self.assertEqual(set(self.entries()), {v4_admin, v6_admin})
        # it stops answering with a change waiting, then leaves DNS: dropped
        # with its waiting change discarded; the other peer is unaffected
        self.v6.stop()
        st, js = L.set_weights("embed", {"blue": 50, "green": 50}, token=TOKEN)
        self.assertEqual(st, 200, js)
        wait_until(lambda: self.entries()[v6_admin]["state"] == "unreachable", 3 * SLOW, what="unreachable")
        write_hosts(V4_ONLY)
        wait_until(lambda: set(self.entries()) == {v4_admin}, (self.REFRESH + 1.0) * SLOW, what="the address dropped")
        self.assertTrue(self.synced(self.v4))
        self.assertIn("veer_peer_changes_discarded_total 1", L.admin("GET", "/metrics")[1])
        self.assertIn("localhost@[::1]:%d is no longer in DNS" % self.port, "".join(L.stderr_lines()))

    def test_the_leaders_own_address_among_a_names_addresses_is_self(self):
        write_hosts(BOTH)
        self.v4 = self.start_peer("v4")
        cfg = config("dns-self", {"admins": ["localhost:%d" % self.port], "token_file": token_file(),
                                  "timeout": "300ms", "retries": 1, "refresh": "500ms", "leader": True})
        cfg["admin"]["address"] = "[::1]:%d" % self.port
        self.leader = L = V6HostsVeer(cfg, name="dns-self")
        st, js = L.set_weights("embed", {"blue": 20, "green": 80}, token=TOKEN)
        self.assertEqual(st, 200, js)
        wait_until(lambda: self.synced(self.v4), 1.0 * SLOW, what="the other replica in sync")
        me, other = "localhost@[::1]:%d" % self.port, "localhost@127.0.0.1:%d" % self.port
        wait_until(lambda: {a: e["state"] for a, e in self.entries().items()} == {me: "self", other: "in_sync"},
                   1.0 * SLOW, what="self and in_sync")
        self.assertEqual((self.entries()[me]["lag"], self.entries()[me]["last_error"]), (0, None))

    def test_at_most_32_peers_from_names(self):
        write_hosts("".join("127.0.0.%d many\n" % i for i in range(1, 35)))
        self.leader = L = HostsVeer(config("dns-many", {"admins": ["127.0.0.1:%d" % self.port, "many:%d" % self.port],
                                                        "timeout": "300ms", "retries": 0, "refresh": "500ms",
                                                        "leader": True}),
                                    name="dns-many")
        wait_until(lambda: len(self.entries()) == 32, 2 * SLOW, what="32 peers")
        names = sorted(a for a in self.entries() if a.startswith("many@"))
        self.assertEqual(len(names), 31)
        self.assertIn("127.0.0.1:%d" % self.port, self.entries())
        self.assertIn("veer_peer_addresses_left_out_total 3", L.admin("GET", "/metrics")[1])
        self.assertIn("3 more addresses than the 32 peers allowed", "".join(L.stderr_lines()))
        # unchanged answers are not counted again
        time.sleep(3 * self.REFRESH)
        self.assertIn("veer_peer_addresses_left_out_total 3", L.admin("GET", "/metrics")[1])


class PeersConfigTest(unittest.TestCase):
    def check(self, cfg):
        path = os.path.join(harness.TMP, "check-%d.json" % time.time_ns())
        with open(path, "w") as f:
            json.dump(cfg, f)
        return subprocess.run([harness.VEER_BIN, "check", "-c", path], capture_output=True, text=True, timeout=30)

    def test_bad_peers_are_reported_with_their_paths(self):
        cfg = config("check", {"admins": ["10.0.0.2:9901", "no-port", "10.0.0.2:9901", 7, "h" * 300 + ":9901"],
                               "timeout": 2, "retries": -1, "tokenfile": "x", "refresh": "10ms"})
        p = self.check(cfg)
        self.assertNotEqual(p.returncode, 0)
        for path in ("peers.admins[1]", "peers.admins[2]", "peers.admins[3]", "peers.admins[4]", "peers.timeout",
                     "peers.retries", "peers.tokenfile", "peers.refresh", "peers.leader"):
            self.assertIn(path, p.stderr + p.stdout)
        cfg["peers"] = {"admins": ["10.0.1.%d:9901" % i for i in range(33)], "leader": True}
        p = self.check(cfg)
        self.assertIn("at most 32 peers", p.stderr + p.stdout)
        cfg["peers"] = {"admins": [cfg["admin"]["address"]], "leader": True}
        p = self.check(cfg)
        self.assertIn("own admin.address", p.stderr + p.stdout)
        cfg["peers"] = {"admins": ["veer-1.veer.ns.svc:9901", "[::1]:9901"], "timeout": "2s", "retries": 3,
                        "token_file": None, "leader": "veer-0"}
        p = self.check(cfg)
        self.assertEqual(p.returncode, 0, p.stderr)

    def test_leader_is_required_and_checked(self):
        cfg = config("check", {"admins": ["10.0.0.2:9901"]})
        p = self.check(cfg)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("peers.leader: required: true on the replica that runs the canary controller, false on the "
                      "others, or the leader's host name", p.stderr + p.stdout)
        for bad, why in ((1, "expected true, false or the leader's host name, got 1"),
                         ("veer 0", 'expected a host name (1-253 of letters, digits, \'-\', \'.\', \'_\'), got "veer 0"'),
                         ("h" * 254, "expected a host name")):
            cfg["peers"]["leader"] = bad
            p = self.check(cfg)
            self.assertNotEqual(p.returncode, 0, bad)
            self.assertIn("peers.leader: " + why, p.stderr + p.stdout)
        for good in (True, False, "veer-ingress-0", socket.gethostname()):
            cfg["peers"]["leader"] = good
            p = self.check(cfg)
            self.assertEqual(p.returncode, 0, (good, p.stderr))

    def test_canary_source_is_checked(self):
        cfg = config("check")
        cfg["routes"][0]["canary"] = {"stable": "blue", "canary": "green",
                                      "source": {"prometheus": "http://127.0.0.1:9090", "query_window": "1m"}}
        p = self.check(cfg)
        self.assertEqual(p.returncode, 0, p.stderr)
        cfg["routes"][0]["canary"]["source"] = {"prometheus": "https://127.0.0.1:9090"}
        p = self.check(cfg)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("routes[0].canary.source.prometheus", p.stderr + p.stdout)


if __name__ == "__main__":
    unittest.main()
