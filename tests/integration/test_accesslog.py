"""The access log and trace headers, end to end: one valid JSON line per
request with the right fields (a proxied GET, a POST with a body, a local 404,
a malformed request, a route timeout, a connect failure, an upstream reset
with its retry); SIGUSR1 after a rename (logrotate) loses nothing; a reload
switches files (and a path that cannot be opened fails the reload); "-"
writes to stdout; a full ring behind a FIFO nobody reads drops and counts
lines while veer keeps answering; x-request-id kept or replaced; W3C
traceparent continued (same trace-id and flags, a new parent-id) or started,
tracestate kept or dropped, as the mock pod's /headers sees them."""

import calendar
import json
import os
import re
import signal
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import EMBED_BODY, MockPod, RawConn, Veer, base_config, fan_out, free_port  # noqa: E402

PODS = {}
KEYS = ("time", "request_id", "trace_id", "listener", "protocol", "client", "method", "path", "authority", "route",
        "cluster", "endpoint", "status", "bytes_in", "bytes_out", "duration_ms", "upstream_ms", "attempts", "flags")
TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
TRACEPARENT_RE = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
VALID_TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def setUpModule():
    harness.require_binaries()
    PODS["blue-1"] = MockPod("blue-1")
    PODS["reset-1"] = MockPod("reset-1", reset_rate=1.0)


def config(log_path, **top):
    clusters = {
        "blue": [PODS["blue-1"].addr],
        "broken": [PODS["reset-1"].addr],
        "dead": {"endpoints": ["127.0.0.1:%d" % free_port()], "connect_timeout": "1s"},
    }
    routes = [
        {"name": "embed", "match": {"path_prefix": "/api/v1/embed"}, "split": [{"cluster": "blue", "weight": 1}]},
        {"name": "slow", "match": {"path_prefix": "/slow"}, "split": [{"cluster": "blue", "weight": 1}],
         "timeout": "300ms"},
        {"name": "broken", "match": {"path_prefix": "/broken"}, "split": [{"cluster": "broken", "weight": 1}]},
        {"name": "dead", "match": {"path_prefix": "/dead"}, "split": [{"cluster": "dead", "weight": 1}]},
        {"name": "rest", "match": {"path_prefix": "/status/"}, "split": [{"cluster": "blue", "weight": 1}]},
        {"name": "headers", "match": {"path_prefix": "/headers"}, "split": [{"cluster": "blue", "weight": 1}]},
    ]
    access_log = {"path": log_path}
    access_log.update(top.pop("access_log", {}))
    return base_config(clusters, routes, access_log=access_log, **top)


def read_lines(path):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    return data.decode("ascii").splitlines()  # the log is ASCII: anything else is escaped


def parse_lines(lines):
    out = []
    for line in lines:
        obj = json.loads(line)
        assert isinstance(obj, dict) and list(obj.keys()) == list(KEYS), obj
        out.append(obj)
    return out


def wait_lines(path, n, timeout=10):
    """Wait until path holds at least n lines (the writer flushes every 100 ms)."""
    return harness.wait_until(lambda: len(read_lines(path)) >= n and read_lines(path), timeout * harness.SLOW,
                              what="%d access log lines in %s" % (n, path))


def raw(port, data, timeout=5.0):
    """Send bytes, read one response; returns (response, client port)."""
    with RawConn(port, timeout=timeout) as c:
        local_port = c.sock.getsockname()[1]
        c.send(data)
        return c.read_response(timeout), local_port


def req(method, path, headers=(), body=b""):
    head = "%s %s HTTP/1.1\r\nHost: veer.test\r\n" % (method, path)
    for k, v in headers:
        head += "%s: %s\r\n" % (k, v)
    if body:
        head += "Content-Length: %d\r\n" % len(body)
    return head.encode() + b"\r\n" + body


def closing_line(veer):
    for o in veer.json_log_lines():
        m = re.match(r"access log: closed, (\d+) lines written, (\d+) dropped", o.get("msg", ""))
        if m:
            return int(m.group(1)), int(m.group(2))
    return None


class AccessLogLineTest(unittest.TestCase):
    """Each kind of request once; every line checked field by field."""

    @classmethod
    def setUpClass(cls):
        cls.log = os.path.join(harness.TMP, "fields.log")
        cls.veer = Veer(config(cls.log))
        cls.t0 = time.time()
        p = cls.veer.port
        cls.sent = {}  # request id -> (response, client port)
        cls.sent["get"] = raw(p, req("GET", "/status/200", [("X-Request-Id", "get-1")]))
        cls.sent["post"] = raw(p, req("POST", "/api/v1/embed", [("X-Request-Id", "post-1"),
                                                                ("Content-Type", "application/json")], EMBED_BODY))
        cls.sent["notfound"] = raw(p, req("GET", "/nowhere?q=a%22b&x=1", [("X-Request-Id", "nf-1")]))
        cls.sent["timeout"] = raw(p, req("GET", "/slow?ms=3000", [("X-Request-Id", "to-1")]))
        cls.sent["dead"] = raw(p, req("GET", "/dead", [("X-Request-Id", "dead-1")]))
        cls.sent["reset"] = raw(p, req("GET", "/broken", [("X-Request-Id", "reset-1")]))
        cls.sent["bad"] = raw(p, b"GARBAGE\r\n\r\n")
        cls.sent["head"] = raw(p, req("GET", "/headers", [("X-Request-Id", "hd-1"), ("traceparent", VALID_TP)]))
        cls.t1 = time.time()
        cls.lines = parse_lines(wait_lines(cls.log, len(cls.sent)))
        cls.by_id = {}
        for o in cls.lines:
            cls.by_id.setdefault(o["request_id"], []).append(o)

    @classmethod
    def tearDownClass(cls):
        cls.veer.stop()

    def line(self, rid):
        got = self.by_id.get(rid, [])
        self.assertEqual(len(got), 1, "request %s: %d lines: %r" % (rid, len(got), self.lines))
        return got[0]

    def common(self, o, key):
        resp, client_port = self.sent[key]
        self.assertRegex(o["time"], TIME_RE)
        t = calendar.timegm(time.strptime(o["time"][:19], "%Y-%m-%dT%H:%M:%S"))
        self.assertTrue(self.t0 - 2 <= t <= self.t1 + 1, (o["time"], self.t0, self.t1))
        self.assertEqual(o["listener"], "http")
        self.assertEqual(o["protocol"], "HTTP/1.1")
        self.assertEqual(o["client"], "127.0.0.1:%d" % client_port)
        self.assertEqual(o["status"], resp.status)
        self.assertEqual(o["bytes_out"], len(resp.body))
        self.assertIsInstance(o["duration_ms"], float)
        self.assertGreaterEqual(o["duration_ms"], 0)

    def test_exactly_one_line_per_request(self):
        self.assertEqual(len(self.lines), len(self.sent), self.lines)
        time.sleep(0.3)
        self.assertEqual(len(read_lines(self.log)), len(self.sent))

    def test_proxied_get(self):
        o = self.line("get-1")
        self.common(o, "get")
        self.assertEqual((o["method"], o["path"], o["authority"]), ("GET", "/status/200", "veer.test"))
        self.assertEqual((o["route"], o["cluster"], o["endpoint"]), ("rest", "blue", PODS["blue-1"].addr))
        self.assertEqual((o["status"], o["bytes_in"], o["attempts"], o["flags"]), (200, 0, 1, []))
        self.assertRegex(o["trace_id"], r"^[0-9a-f]{32}$")
        self.assertIsInstance(o["upstream_ms"], float)
        self.assertLessEqual(o["upstream_ms"], o["duration_ms"])

    def test_post_with_body(self):
        o = self.line("post-1")
        self.common(o, "post")
        self.assertEqual((o["method"], o["route"], o["status"]), ("POST", "embed", 200))
        self.assertEqual(o["bytes_in"], len(EMBED_BODY))
        self.assertGreater(o["bytes_out"], 384 * 2)  # 384 floats

    def test_local_404_keeps_query(self):
        o = self.line("nf-1")
        self.common(o, "notfound")
        self.assertEqual(o["path"], "/nowhere?q=a%22b&x=1")
        self.assertEqual((o["status"], o["route"], o["cluster"], o["endpoint"]), (404, None, None, None))
        self.assertEqual((o["upstream_ms"], o["attempts"], o["flags"]), (None, 0, ["local"]))
        self.assertEqual(json.loads(self.sent["notfound"][0].body)["request_id"], "nf-1")

    def test_route_timeout(self):
        o = self.line("to-1")
        self.common(o, "timeout")
        self.assertEqual((o["status"], o["route"], o["cluster"]), (504, "slow", "blue"))
        self.assertEqual(sorted(o["flags"]), ["local", "timeout"])
        self.assertEqual((o["upstream_ms"], o["attempts"]), (None, 1))
        self.assertGreaterEqual(o["duration_ms"], 290)
        self.assertLess(o["duration_ms"], 2900)

    def test_connect_failure(self):
        o = self.line("dead-1")
        self.common(o, "dead")
        self.assertEqual((o["status"], o["route"], o["cluster"]), (503, "dead", "dead"))
        self.assertEqual(sorted(o["flags"]), ["connect_fail", "local"])
        self.assertRegex(o["endpoint"], r"^127\.0\.0\.1:\d+$")

    def test_upstream_reset_and_retry(self):
        o = self.line("reset-1")
        self.common(o, "reset")
        self.assertEqual((o["status"], o["route"], o["endpoint"]), (502, "broken", PODS["reset-1"].addr))
        self.assertEqual(sorted(o["flags"]), ["local", "reset"])
        self.assertEqual(o["attempts"], 2)  # a GET reset before any byte is tried once more

    def test_malformed_request(self):
        resp = self.sent["bad"][0]
        self.assertEqual(resp.status, 400)
        rid = resp.json()["request_id"]
        o = self.line(rid)
        self.common(o, "bad")
        self.assertEqual((o["method"], o["path"], o["route"], o["trace_id"]), (None, None, None, None))
        self.assertEqual(o["flags"], ["local"])

    def test_trace_id_is_what_went_upstream(self):
        o = self.line("hd-1")
        got = json.loads(self.sent["head"][0].body)
        self.assertEqual(TRACEPARENT_RE.match(got["traceparent"]).group(1), o["trace_id"])
        self.assertEqual(o["trace_id"], VALID_TP[3:35])


class AccessLogFileTest(unittest.TestCase):
    def test_sigusr1_after_rename_loses_nothing(self):
        log = os.path.join(harness.TMP, "rotate.log")
        veer = Veer(config(log))
        try:
            fan_out(veer.port, 30, "GET", "/status/200", threads=3)
            wait_lines(log, 30)
            os.rename(log, log + ".1")
            fan_out(veer.port, 20, "GET", "/status/200", threads=2)  # in flight around the rotation
            veer.signal(signal.SIGUSR1)
            harness.wait_until(lambda: os.path.exists(log), 5 * harness.SLOW, what="the reopened log file")
            after = fan_out(veer.port, 25, "GET", "/status/201", headers={"X-Request-Id": "after-rotate"}, threads=1)
            self.assertEqual([r[1] for r in after], [201] * 25)
            wait_lines(log, 25)
            self.assertEqual(veer.stop(), 0)
            old, new = parse_lines(read_lines(log + ".1")), parse_lines(read_lines(log))
            self.assertEqual(len(old) + len(new), 75)
            self.assertEqual(sum(o["request_id"] == "after-rotate" for o in new), 25)
            self.assertEqual(sum(o["request_id"] == "after-rotate" for o in old), 0)
            self.assertEqual(closing_line(veer), (75, 0))
        finally:
            veer.stop()

    def test_reload_switches_file(self):
        log, log2 = os.path.join(harness.TMP, "before.log"), os.path.join(harness.TMP, "after.log")
        cfg = config(log)
        veer = Veer(cfg)
        try:
            fan_out(veer.port, 10, "GET", "/status/200", threads=1)
            # a path that cannot be opened fails the reload, and the old file stays
            cfg["access_log"]["path"] = os.path.join(harness.TMP, "no-such-dir", "x.log")
            veer.write_config(cfg)
            st, js = veer.admin("POST", "/v1/reload")
            self.assertEqual(st, 400, js)
            self.assertIn("access_log.path: cannot open", json.dumps(js))
            fan_out(veer.port, 5, "GET", "/status/200", threads=1)
            wait_lines(log, 15)
            cfg["access_log"]["path"] = log2
            veer.write_config(cfg)
            st, js = veer.admin("POST", "/v1/reload")
            self.assertEqual(st, 200, js)
            time.sleep(0.3)  # the writer switches on its next wake-up (at once)
            fan_out(veer.port, 12, "GET", "/status/200", headers={"X-Request-Id": "after-reload"}, threads=2)
            lines2 = parse_lines(wait_lines(log2, 12))
            self.assertEqual(sum(o["request_id"] == "after-reload" for o in lines2), 12)
            self.assertEqual(len(read_lines(log)), 15)
            # and off: nothing more is written anywhere
            cfg["access_log"]["path"] = None
            veer.write_config(cfg)
            self.assertEqual(veer.admin("POST", "/v1/reload")[0], 200)
            time.sleep(0.3)
            fan_out(veer.port, 5, "GET", "/status/200", threads=1)
            self.assertEqual(veer.stop(), 0)
            self.assertEqual((len(read_lines(log)), len(read_lines(log2))), (15, 12))
        finally:
            veer.stop()

    def test_stdout(self):
        veer = Veer(config("-"))
        try:
            fan_out(veer.port, 7, "GET", "/status/200", headers={"X-Request-Id": "to-stdout"}, threads=1)
            self.assertEqual(veer.stop(), 0)
            lines = parse_lines(read_lines(veer.out))
            self.assertEqual([o["request_id"] for o in lines], ["to-stdout"] * 7)
        finally:
            veer.stop()

    def test_full_ring_drops_and_counts_but_never_blocks(self):
        fifo = os.path.join(harness.TMP, "access.fifo")
        os.mkfifo(fifo)
        rd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader that never reads
        veer = Veer(config(fifo, workers=1, access_log={"buffer_bytes": 16384}))
        try:
            n = 600  # ~250 KB of lines against a 64 KiB pipe and a 16 KiB ring
            res = fan_out(veer.port, n, "GET", "/status/200", threads=4)
            self.assertEqual(sum(r[1] == 200 for r in res), n, [r for r in res if r[1] != 200][:5])
            st, text = veer.admin("GET", "/metrics")
            self.assertEqual(st, 200)
            m = re.search(r"^veer_access_log_dropped_total (\d+)$", text, re.M)
            self.assertIsNotNone(m, "veer_access_log_dropped_total missing from /metrics")
            dropped_live = int(m.group(1))
            self.assertGreater(dropped_live, 0)
            self.assertEqual(veer.stop(), 0)
            data = b""
            while True:
                try:
                    chunk = os.read(rd, 1 << 16)
                except BlockingIOError:
                    break
                if not chunk:
                    break
                data += chunk
            in_pipe = data.count(b"\n")
            written, dropped = closing_line(veer)
            self.assertGreater(dropped, 0)
            self.assertGreaterEqual(dropped, dropped_live)  # more may drop at exit
            self.assertEqual(written, in_pipe)
            self.assertEqual(written + dropped, n)
            warns = [o["msg"] for o in veer.json_log_lines() if o.get("level") == "warn"]
            self.assertTrue(any("lines dropped" in m and "buffer_bytes 16384" in m for m in warns), warns)
            for line in data.split(b"\n")[:in_pipe]:
                self.assertEqual(json.loads(line)["status"], 200)
        finally:
            os.close(rd)
            veer.stop()


class TraceHeaderTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.log = os.path.join(harness.TMP, "trace.log")
        cls.veer = Veer(config(cls.log))

    @classmethod
    def tearDownClass(cls):
        cls.veer.stop()

    def upstream_headers(self, headers):
        resp, _ = raw(self.veer.port, req("GET", "/headers", headers))
        self.assertEqual(resp.status, 200, resp)
        return resp.json()

    def test_valid_traceparent_continued(self):
        got = self.upstream_headers([("traceparent", VALID_TP), ("tracestate", "congo=t61rcWkgMzE,rojo=00f0")])
        m = TRACEPARENT_RE.match(got["traceparent"])
        self.assertIsNotNone(m, got)
        self.assertEqual(m.group(1), VALID_TP[3:35])  # same trace
        self.assertNotEqual(m.group(2), VALID_TP[36:52])  # veer's span is the new parent
        self.assertNotEqual(m.group(2), "0" * 16)
        self.assertEqual(m.group(3), "01")
        self.assertEqual(got["tracestate"], "congo=t61rcWkgMzE,rojo=00f0")
        again = TRACEPARENT_RE.match(self.upstream_headers([("traceparent", VALID_TP)])["traceparent"])
        self.assertNotEqual(again.group(2), m.group(2))  # a new span per request

    def test_unsampled_flag_honoured(self):
        tp = VALID_TP[:-2] + "00"
        got = self.upstream_headers([("traceparent", tp)])
        self.assertEqual(got["traceparent"][:36], tp[:36])
        self.assertTrue(got["traceparent"].endswith("-00"), got)

    def test_started_when_absent(self):
        a = TRACEPARENT_RE.match(self.upstream_headers([])["traceparent"])
        b = TRACEPARENT_RE.match(self.upstream_headers([])["traceparent"])
        self.assertIsNotNone(a)
        self.assertNotEqual(a.group(1), b.group(1))
        self.assertNotEqual(a.group(1), "0" * 32)
        self.assertEqual(a.group(3), "01")  # trace.sample_percent defaults to 100

    def test_invalid_restarted_and_tracestate_dropped(self):
        for bad in (VALID_TP.upper(), "ff" + VALID_TP[2:], VALID_TP[:-1], "00-" + "0" * 32 + VALID_TP[35:],
                    VALID_TP + "-extra"):
            got = self.upstream_headers([("traceparent", bad), ("tracestate", "k=v")])
            m = TRACEPARENT_RE.match(got["traceparent"])
            self.assertIsNotNone(m, (bad, got))
            self.assertNotEqual(m.group(1), VALID_TP[3:35], bad)
            self.assertNotIn("tracestate", got, bad)

    def test_future_version_read_as_00(self):
        got = self.upstream_headers([("traceparent", "01" + VALID_TP[2:] + "-future"), ("tracestate", "k=v")])
        self.assertEqual(got["traceparent"][:36], "00" + VALID_TP[2:36])
        self.assertEqual(got["tracestate"], "k=v")

    def test_request_id_kept_or_replaced(self):
        self.assertEqual(self.upstream_headers([("X-Request-Id", "abc-123")])["x-request-id"], "abc-123")
        for bad in ("x" * 129, "two words"):
            got = self.upstream_headers([("X-Request-Id", bad)])["x-request-id"]
            self.assertRegex(got, r"^[0-9a-f]{32}$", bad)
        self.assertEqual(self.upstream_headers([("X-Request-Id", "y" * 128)])["x-request-id"], "y" * 128)

    def test_request_id_in_local_reply_is_json_safe(self):
        resp, _ = raw(self.veer.port, req("GET", "/nowhere", [("X-Request-Id", 'q"uo\\te')]))
        self.assertEqual(resp.status, 404)
        self.assertEqual(resp.json()["request_id"], 'q"uo\\te')
        self.assertEqual(resp.header("x-request-id"), 'q"uo\\te')

    def test_sample_percent_zero(self):
        veer = Veer(config(None, trace={"sample_percent": 0}))
        try:
            resp, _ = raw(veer.port, req("GET", "/headers"))
            self.assertTrue(resp.json()["traceparent"].endswith("-00"), resp.json())
            resp, _ = raw(veer.port, req("GET", "/headers", [("traceparent", VALID_TP)]))
            self.assertEqual(resp.json()["traceparent"][:36], VALID_TP[:36])
            self.assertTrue(resp.json()["traceparent"].endswith("-01"))  # the caller's decision stands
        finally:
            veer.stop()


if __name__ == "__main__":
    harness.main()
