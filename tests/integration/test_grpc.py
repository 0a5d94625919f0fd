"""gRPC through veer: an HTTP/2 client (python3-h2) to veer, veer over h2c to
the mock pod's gRPC-shaped Embed method. Length-prefixed messages arrive
intact and grpc-status trailers come back; trailers-only answers pass through
unchanged; grpc-timeout is the deadline when shorter than the route's; and
veer's own replies to gRPC clients are gRPC-shaped (HTTP 200, grpc-status),
while an HTTP/1.1 client keeps the JSON reply."""

import json
import os
import socket
import struct
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import MockPod, Veer, base_config, free_port  # noqa: E402

try:
    import h2.config
    import h2.connection
    import h2.events
    import h2.settings
except ImportError:  # Debian's python3-h2, when the interpreter is not Debian's own
    sys.path.append("/usr/lib/python3/dist-packages")
    try:
        import h2.config
        import h2.connection
        import h2.events
        import h2.settings
    except ImportError:
        h2 = None

EMBED = "/akidb.v1.Embed/Embed"
GRPC_HEADERS = [("content-type", "application/grpc"), ("te", "trailers")]


def setUpModule():
    harness.require_binaries()
    if h2 is None:
        raise AssertionError("python3-h2 is missing (apt-get install -y python3-h2)")


def grpc_frame(payload):
    return b"\x00" + struct.pack(">I", len(payload)) + payload


class Call:
    """What came back on one stream."""

    def __init__(self):
        self.headers = None        # {name: value} of the response head
        self.trailers = None       # {name: value}, None when there were none
        self.trailers_only = False  # the head ended the stream
        self.data = b""
        self.reset = None          # RST_STREAM error code
        self.elapsed = None

    def status(self):
        """grpc-status: from the trailers, or the head of a trailers-only answer."""
        src = self.trailers if self.trailers is not None else self.headers or {}
        v = src.get("grpc-status")
        return int(v) if v is not None else None


def h2_calls(port, requests, timeout=10):
    """Runs [(path, headers, body)] as concurrent streams on one HTTP/2
    connection; returns a Call for each, in order."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 22})
    conn.increment_flow_control_window(1 << 26)
    s.sendall(conn.data_to_send())
    calls, pending_body, ids = {}, {}, []
    t0 = time.time()
    for path, headers, body in requests:
        sid = conn.get_next_available_stream_id()
        ids.append(sid)
        calls[sid] = Call()
        head = [(":method", "POST"), (":scheme", "http"), (":authority", "127.0.0.1:%d" % port),
                (":path", path)] + list(headers)
        conn.send_headers(sid, head, end_stream=not body)
        if body:
            pending_body[sid] = memoryview(body)
    open_streams = set(ids)
    deadline = t0 + timeout
    try:
        while open_streams:
            for sid, rest in list(pending_body.items()):  # send what the windows allow
                while rest:
                    n = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size, len(rest))
                    if n <= 0:
                        break
                    conn.send_data(sid, rest[:n].tobytes())
                    rest = rest[n:]
                if rest:
                    pending_body[sid] = rest
                else:
                    conn.end_stream(sid)
                    del pending_body[sid]
            s.sendall(conn.data_to_send())
            s.settimeout(max(0.01, deadline - time.time()))
            data = s.recv(1 << 20)
            if not data:
                break
            for ev in conn.receive_data(data):
                c = calls.get(getattr(ev, "stream_id", None))
                if isinstance(ev, h2.events.ResponseReceived):
                    c.headers = dict(ev.headers)
                    c.trailers_only = ev.stream_ended is not None
                elif isinstance(ev, h2.events.DataReceived):
                    c.data += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.TrailersReceived):
                    c.trailers = dict(ev.headers)
                elif isinstance(ev, h2.events.StreamEnded):
                    c.elapsed = time.time() - t0
                    open_streams.discard(ev.stream_id)
                elif isinstance(ev, h2.events.StreamReset):
                    c.reset = ev.error_code
                    c.elapsed = time.time() - t0
                    open_streams.discard(ev.stream_id)
                    pending_body.pop(ev.stream_id, None)
            s.sendall(conn.data_to_send())
    except socket.timeout:
        pass
    finally:
        s.close()
    return [calls[sid] for sid in ids]


def h2_call(port, path, headers=GRPC_HEADERS, body=b"", timeout=10):
    return h2_calls(port, [(path, headers, body)], timeout)[0]


def h2_downstream(port):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        try:
            first = s.recv(64)
        except socket.timeout:
            return False
    return not first.startswith(b"HTTP/1.1")


def grpc_config(clusters, routes=None, **top):
    if routes is None:
        routes = [{"name": "grpc", "match": {"path_prefix": "/akidb.v1.Embed/"},
                   "split": [{"cluster": next(iter(clusters)), "weight": 100}]}]
    return base_config(clusters, routes, workers=1, **top)


def h2c(pod, **extra):
    c = {"endpoints": [pod.addr], "protocol": "h2c"}
    c.update(extra)
    return c


class GrpcTest(unittest.TestCase):
    def start(self, config):
        veer = Veer(config)
        self.addCleanup(veer.stop)
        if not h2_downstream(veer.port):
            self.skipTest("veer answers the HTTP/2 preface with HTTP/1.1 400: no HTTP/2 downstream in this build")
        return veer

    def test_unary_calls_intact(self):
        pod = MockPod("grpc-1")
        self.addCleanup(pod.stop)
        veer = self.start(grpc_config({"pod": h2c(pod)}, routes=[
            {"name": "grpc", "match": {"path_prefix": "/akidb.v1.Embed/"}, "split": [{"cluster": "pod", "weight": 100}]},
            {"name": "rest", "split": [{"cluster": "pod", "weight": 100}]}]))
        texts = ["hello grpc", "", "x" * (1 << 20)] + ["text %d" % i for i in range(20)]
        calls = h2_calls(veer.port, [(EMBED, GRPC_HEADERS, grpc_frame(t.encode())) for t in texts], timeout=30)
        for text, c in zip(texts, calls):
            self.assertIsNone(c.reset)
            self.assertEqual(c.headers.get(":status"), "200", c.headers)
            self.assertEqual(c.headers.get("content-type"), "application/grpc")
            self.assertEqual(c.headers.get("x-pod"), "grpc-1")
            self.assertFalse(c.trailers_only)
            self.assertEqual(c.trailers, {"grpc-status": "0"})
            self.assertGreater(len(c.data), 5)
            flag, n = struct.unpack(">BI", c.data[:5])
            self.assertEqual((flag, n), (0, len(c.data) - 5), "length prefix of the answer")
            got = json.loads(c.data[5:])
            st, _, body = veer.request("POST", "/api/v1/embed", {"text": text})
            self.assertEqual(st, 200)
            self.assertEqual(got["embedding"], json.loads(body)["embedding"], "gRPC and REST disagree on %r" % text[:20])
        st = pod.stats()
        self.assertEqual(st["requests_by_path"][EMBED], len(texts))
        self.assertGreaterEqual(st["h2_peak_streams"], 2, "the calls were not multiplexed: %r" % st)

    def test_grpc_status_passes_through_trailers_only(self):
        pod = MockPod("grpc-1")
        self.addCleanup(pod.stop)
        veer = self.start(grpc_config({"pod": h2c(pod)}))
        pod.fault(grpc_error_rate=1.0)
        c = h2_call(veer.port, EMBED, body=grpc_frame(b"hi"))
        self.assertEqual(c.headers.get(":status"), "200")
        self.assertTrue(c.trailers_only, "a trailers-only answer must stay trailers-only")
        self.assertEqual(c.status(), 14)
        self.assertEqual(c.headers.get("grpc-message"), "injected")
        self.assertEqual(c.data, b"")
        pod.fault(grpc_error_code=5)
        c = h2_call(veer.port, EMBED, body=grpc_frame(b"hi"))
        self.assertEqual(c.status(), 5)
        pod.fault(grpc_error_rate=0.0)
        self.assertEqual(h2_call(veer.port, EMBED, body=grpc_frame(b"hi")).status(), 0)
        # a malformed message: the pod's own trailers-only INVALID_ARGUMENT
        c = h2_call(veer.port, EMBED, body=b"\x00\x00\x00\x00\x09short")
        self.assertEqual(c.status(), 3)
        self.assertTrue(c.trailers_only)

    def test_grpc_timeout_is_the_deadline(self):
        pod = MockPod("grpc-1")
        self.addCleanup(pod.stop)
        veer = self.start(grpc_config({"pod": h2c(pod)}))
        self.assertEqual(h2_call(veer.port, EMBED, body=grpc_frame(b"warm")).status(), 0)
        pod.fault(latency="2s")
        c = h2_call(veer.port, EMBED, GRPC_HEADERS + [("grpc-timeout", "100m")], grpc_frame(b"slow"))
        self.assertEqual(c.headers.get(":status"), "200", c.headers)
        self.assertEqual(c.headers.get("content-type"), "application/grpc")
        self.assertTrue(c.trailers_only)
        self.assertEqual(c.status(), 4, c.headers)  # DEADLINE_EXCEEDED
        self.assertGreater(c.elapsed, 0.09)
        self.assertLess(c.elapsed, 0.5 * harness.SLOW, "deadline of 100 ms hit after %.3fs" % c.elapsed)
        # another unit
        c = h2_call(veer.port, EMBED, GRPC_HEADERS + [("grpc-timeout", "200000u")], grpc_frame(b"slow"))
        self.assertEqual(c.status(), 4)
        self.assertLess(c.elapsed, 0.6 * harness.SLOW)
        # a malformed value is ignored: the route's 15 s apply
        pod.fault(latency="300ms")
        c = h2_call(veer.port, EMBED, GRPC_HEADERS + [("grpc-timeout", "1.5S")], grpc_frame(b"ok"))
        self.assertEqual(c.status(), 0)

    def test_route_timeout_wins_when_shorter(self):
        pod = MockPod("grpc-1", latency="2s")
        self.addCleanup(pod.stop)
        veer = self.start(grpc_config({"pod": h2c(pod)}, routes=[
            {"name": "grpc", "timeout": "300ms", "split": [{"cluster": "pod", "weight": 100}]}]))
        c = h2_call(veer.port, EMBED, GRPC_HEADERS + [("grpc-timeout", "10S")], grpc_frame(b"slow"))
        self.assertEqual(c.status(), 4)
        self.assertGreater(c.elapsed, 0.25)
        self.assertLess(c.elapsed, 0.8 * harness.SLOW)

    def test_local_replies_are_grpc_shaped(self):
        pod = MockPod("grpc-1")
        self.addCleanup(pod.stop)
        dead = "127.0.0.1:%d" % free_port()
        veer = self.start(grpc_config({"pod": h2c(pod), "dead": {"endpoints": [dead], "protocol": "h2c"}}, routes=[
            {"name": "grpc", "match": {"path_prefix": "/akidb.v1.Embed/"}, "split": [{"cluster": "pod", "weight": 100}]},
            {"name": "down", "match": {"path_prefix": "/akidb.v1.Down/"},
             "split": [{"cluster": "dead", "weight": 100}]}]))
        cases = [("/other.v1.Svc/Call", 12, "no route matches"),
                 ("/akidb.v1.Down/Call", 14, "upstream connect failure")]
        for path, code, message in cases:
            c = h2_call(veer.port, path, body=grpc_frame(b"x"))
            self.assertEqual(c.headers.get(":status"), "200", (path, c.headers))
            self.assertEqual(c.headers.get("content-type"), "application/grpc")
            self.assertTrue(c.trailers_only, path)
            self.assertEqual(c.status(), code, (path, c.headers))
            self.assertEqual(c.headers.get("grpc-message"), message)
            self.assertTrue(c.headers.get("x-request-id"))
            self.assertEqual(c.data, b"")
        # a non-gRPC request over HTTP/2 keeps the JSON reply
        c = h2_call(veer.port, "/other.v1.Svc/Call", [("content-type", "application/json")], b"{}")
        self.assertEqual(c.headers.get(":status"), "404")
        self.assertEqual(json.loads(c.data)["error"], "no route matches")
        # and so does a gRPC request over HTTP/1.1
        st, hd, body = veer.request("POST", "/other.v1.Svc/Call", grpc_frame(b"x"),
                                    {"content-type": "application/grpc"})
        self.assertEqual(st, 404)
        self.assertEqual(json.loads(body)["error"], "no route matches")

    def test_overflow_is_resource_exhausted(self):
        pod = MockPod("grpc-1")
        self.addCleanup(pod.stop)
        pod.fault(max_concurrent_streams=1)
        veer = self.start(grpc_config({"pod": h2c(pod, circuit_breakers={"max_pending_requests": 0})}))
        harness.wait_until(lambda: h2_call(veer.port, EMBED, body=grpc_frame(b"w")).status() == 0, 5,
                           what="a connection to the pod")
        pod.fault(latency="800ms")
        first = []
        t = threading.Thread(target=lambda: first.append(h2_call(veer.port, EMBED, body=grpc_frame(b"a"))))
        t.start()
        harness.wait_until(lambda: pod.stats()["h2_streams_active"] == 1, 5, what="the first call at the pod")
        c = h2_call(veer.port, EMBED, body=grpc_frame(b"b"))
        t.join()
        self.assertEqual(c.status(), 8, c.headers)  # RESOURCE_EXHAUSTED
        self.assertEqual(c.headers.get("x-veer-overloaded"), "true")
        self.assertEqual(first[0].status(), 0)


if __name__ == "__main__":
    harness.main()
