"""HTTP/2 downstream (h2c with prior knowledge on the plain listener): bodies of
every size through to the mock pod with curl, nghttp and a python-h2 client,
100 concurrent streams, h2load, the RFC 9113 §8.3 request checks (each a
stream error that leaves the connection and its other streams alive), cookie
crumbs, :authority and Host, request trailers, local replies, flow control
tied to the upstream (a slow reader and a slow sink keep veer's memory flat),
graceful drain, and HTTP/1.1 still served on the same listener.

The raw client (H2Conn, RawH2) is shared with test_h2_attacks.py."""

import hashlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import unittest

try:
    import h2.config
    import h2.connection
    import h2.events
    import h2.exceptions
    import h2.settings
    import hpack
except ImportError:
    # ctest may run a python3 without the Debian packages (pyenv): the
    # system one has python3-h2 (scripts/install-deps.sh installs it).
    if os.path.exists("/usr/bin/python3") and os.path.realpath(sys.executable) != os.path.realpath("/usr/bin/python3"):
        os.execv("/usr/bin/python3", ["/usr/bin/python3"] + sys.argv)
    raise

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import RssSampler, Veer, base_config  # noqa: E402

MB = 1 << 20
PROTOCOL_ERROR, INTERNAL_ERROR, REFUSED_STREAM, CANCEL, ENHANCE_YOUR_CALM = 0x1, 0x2, 0x7, 0x8, 0xb
GROWTH_LIMIT_KB = (64 if harness.ASAN else 32) * 1024


# ---------------------------------------------------------------- clients

class H2Conn(harness.SocketClient):
    """A python-h2 client on one connection. Validation and normalization of
    what it sends are off, so malformed requests go out as written."""

    def __init__(self, port, timeout=10.0, settings=None, auto_ack=True, rcvbuf=None):
        # TCP_NODELAY as every HTTP/2 client
        super().__init__(port, timeout=timeout, rcvbuf=rcvbuf, nodelay=True)
        cfg = h2.config.H2Configuration(client_side=True, header_encoding=None,
                                        validate_outbound_headers=False, normalize_outbound_headers=False,
                                        validate_inbound_headers=False)
        self.conn = h2.connection.H2Connection(config=cfg)
        self.conn.initiate_connection()
        if settings:
            self.conn.update_settings(settings)
        self.auto_ack = auto_ack
        self.streams = {}
        self.goaways = []       # (error_code, last_stream_id)
        self.pings = []
        self.remote_settings = {}
        self.closed = False
        self.flush()

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def _st(self, sid):
        return self.streams.setdefault(sid, {"status": None, "headers": [], "data": bytearray(), "ended": False,
                                             "reset": None, "trailers": None, "informational": []})

    def request(self, method, path, headers=(), body=None, end=None, authority="h2.test", scheme="http",
                pseudo=None):
        """Open a stream. pseudo: the exact pseudo-header list to send instead
        of the usual four. Returns the stream id."""
        sid = self.conn.get_next_available_stream_id()
        if pseudo is None:
            pseudo = [(":method", method), (":path", path), (":scheme", scheme), (":authority", authority)]
        hdrs = [(k.encode() if isinstance(k, str) else k, v.encode() if isinstance(v, str) else v)
                for k, v in list(pseudo) + list(headers)]
        if end is None:
            end = body is None
        self.conn.send_headers(sid, hdrs, end_stream=end)
        self._st(sid)
        self.flush()
        if body is not None:
            self.send_body(sid, body, end=True)
        return sid

    def send_body(self, sid, body, end=True, deadline=None):
        """Send body (bytes or an iterable of bytes) within flow control."""
        deadline = deadline or time.time() + 60 * harness.SLOW
        chunks = [body] if isinstance(body, (bytes, bytearray)) else body
        for chunk in chunks:
            view = memoryview(chunk)
            while len(view) > 0:
                room = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
                if room <= 0:
                    self.pump(max(0.01, deadline - time.time()))
                    if time.time() > deadline:
                        raise AssertionError("no window to send the body in time")
                    st = self.streams.get(sid)
                    if st and (st["reset"] is not None or st["ended"]):
                        return
                    continue
                n = min(room, len(view))
                self.conn.send_data(sid, view[:n].tobytes())
                view = view[n:]
                self.flush()
        if end:
            self.conn.end_stream(sid)
            self.flush()

    def pump(self, timeout=None):
        """Read once and handle the events. Returns False on EOF."""
        if self.closed:
            return False
        data = self.recv_once(timeout if timeout is not None else self.timeout)
        if data is None:
            return True
        if not data:
            self.closed = True
            return False
        for ev in self.conn.receive_data(data):
            self._event(ev)
        self.flush()
        return True

    def _event(self, ev):
        if isinstance(ev, h2.events.ResponseReceived):
            st = self._st(ev.stream_id)
            st["headers"] = [(k.decode(), v.decode("latin-1")) for k, v in ev.headers]
            st["status"] = int(dict(st["headers"])[":status"])
        elif isinstance(ev, h2.events.InformationalResponseReceived):
            self._st(ev.stream_id)["informational"].append(ev.headers)
        elif isinstance(ev, h2.events.DataReceived):
            self._st(ev.stream_id)["data"] += ev.data
            if self.auto_ack and ev.flow_controlled_length:
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        elif isinstance(ev, h2.events.TrailersReceived):
            self._st(ev.stream_id)["trailers"] = [(k.decode(), v.decode("latin-1")) for k, v in ev.headers]
        elif isinstance(ev, h2.events.StreamEnded):
            self._st(ev.stream_id)["ended"] = True
        elif isinstance(ev, h2.events.StreamReset):
            self._st(ev.stream_id)["reset"] = ev.error_code
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self.goaways.append((ev.error_code, ev.last_stream_id))
        elif isinstance(ev, h2.events.PingAckReceived):
            self.pings.append(ev.ping_data)
        elif isinstance(ev, h2.events.RemoteSettingsChanged):
            for k, v in ev.changed_settings.items():
                self.remote_settings[int(k)] = v.new_value

    def wait(self, pred, timeout=None, what="condition"):
        deadline = time.time() + (timeout or self.timeout)
        while not pred():
            left = deadline - time.time()
            if left <= 0:
                raise AssertionError("timed out waiting for %s" % what)
            if not self.pump(min(left, 0.5)) and not pred():
                raise AssertionError("connection closed while waiting for %s (goaways %r)" % (what, self.goaways))
        return True

    def done(self, sid):
        st = self.streams.get(sid)
        return st is not None and (st["ended"] or st["reset"] is not None)

    def response(self, sid, timeout=None):
        self.wait(lambda: self.done(sid), timeout, "stream %d" % sid)
        return self.streams[sid]

    def header(self, sid, name):
        for k, v in self.streams[sid]["headers"]:
            if k == name:
                return v
        return None


def frame(ftype, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", sid & 0x7fffffff) + payload


PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0, 1, 2, 3, 4, 6, 7, 8, 9
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4


def hpack_literal(name, value):
    """A literal header field without indexing, no Huffman (RFC 7541 §6.2.2)."""
    def integer(n, prefix_bits, first=0):
        limit = (1 << prefix_bits) - 1
        if n < limit:
            return bytes([first | n])
        out = [first | limit]
        n -= limit
        while n >= 128:
            out.append((n & 0x7f) | 0x80)
            n >>= 7
        out.append(n)
        return bytes(out)
    name, value = (name.encode() if isinstance(name, str) else name), (value.encode() if isinstance(value, str) else value)
    return b"\x00" + integer(len(name), 7) + name + integer(len(value), 7) + value


class RawH2(harness.SocketClient):
    """Frames written by hand (for what no conforming client would send) and
    frames read back raw: type, flags, stream, payload."""

    def __init__(self, port, timeout=10.0, answer_pings=False):
        super().__init__(port, timeout=timeout, nodelay=True)
        self.buf = b""
        self.frames = []
        self.closed = False
        self.answer_pings = answer_pings
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.sock.sendall(PREFACE + frame(SETTINGS, 0, 0))

    def try_send(self, data):
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            return False

    def headers_block(self, method="GET", path="/status/200", extra=()):
        return self.encoder.encode([(":method", method), (":path", path), (":scheme", "http"),
                                    (":authority", "h2.test")] + list(extra))

    def read(self, timeout):
        """Read what arrives within timeout; returns False once closed."""
        if self.closed:
            return False
        data = self.recv_once(timeout)
        if data is None:
            return True
        if not data:
            self.closed = True
            return False
        self.buf += data
        while len(self.buf) >= 9:
            n = int.from_bytes(self.buf[:3], "big")
            if len(self.buf) < 9 + n:
                break
            ftype, flags = self.buf[3], self.buf[4]
            sid = int.from_bytes(self.buf[5:9], "big") & 0x7fffffff
            payload = self.buf[9:9 + n]
            self.frames.append((ftype, flags, sid, payload))
            self.buf = self.buf[9 + n:]
            if ftype == PING and not flags & ACK and self.answer_pings:
                self.try_send(frame(PING, ACK, 0, payload))
        return True

    def wait_for(self, pred, timeout, what):
        deadline = time.time() + timeout
        while not pred():
            if time.time() > deadline:
                raise AssertionError("timed out waiting for %s; frames %r" % (what, [f[:3] for f in self.frames]))
            if not self.read(min(0.5, max(0.01, deadline - time.time()))) and not pred():
                raise AssertionError("closed while waiting for %s; frames %r" % (what, [f[:3] for f in self.frames]))

    def response(self, sid):
        """(status, body, ended) of stream sid from the frames read so far
        (HEADERS without padding or priority, as veer sends them)."""
        status, body, ended = None, b"", False
        for t, flags, s, p in self.frames:
            if s != sid:
                continue
            if t == HEADERS:
                hdrs = dict(self.decoder.decode(p))
                status = int(hdrs[":status"]) if status is None else status
            elif t == DATA:
                body += p
            ended = ended or bool(flags & END_STREAM and t in (HEADERS, DATA))
        return status, body, ended

    def goaways(self):
        return [(int.from_bytes(p[4:8], "big"), int.from_bytes(p[:4], "big") & 0x7fffffff)
                for t, _, _, p in self.frames if t == GOAWAY]

    def resets(self):
        return {sid: int.from_bytes(p[:4], "big") for t, _, sid, p in self.frames if t == RST_STREAM}

    def wait_closed(self, timeout):
        """Read until the server closes; True when it did within timeout."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if not self.read(min(0.5, max(0.01, deadline - time.time()))):
                return True
        return False


def h2_get(port, path, timeout=10):
    """One GET on a fresh HTTP/2 connection: (status, body)."""
    with H2Conn(port, timeout=timeout) as c:
        st = c.response(c.request("GET", path), timeout)
        return st["status"], bytes(st["data"])


# ---------------------------------------------------------------- upstreams written here

class CaptureServer:
    """An HTTP/1.1 upstream that records each request's raw bytes (head and
    body, chunked or Content-Length) and answers 200 with their count. Its
    reading can be slowed (bytes per second) to play a slow sink."""

    def __init__(self):
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.port = self.lsock.getsockname()[1]
        self.addr = "127.0.0.1:%d" % self.port
        self.requests = []          # raw bytes of each complete request
        self.rate = None            # bytes/s while slow, None: full speed
        self.received = 0
        self.stop_ev = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        self.lsock.settimeout(0.2)
        while not self.stop_ev.is_set():
            try:
                s, _ = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(s,), daemon=True).start()

    def _recv(self, s, n):
        if self.rate:
            n = min(n, max(1024, int(self.rate / 20)))
            time.sleep(0.05)
        data = s.recv(n)
        self.received += len(data)
        return data

    def _serve(self, s):
        s.settimeout(60)
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    d = self._recv(s, 65536)
                    if not d:
                        return
                    buf += d
                head, rest = buf.split(b"\r\n\r\n", 1)
                lines = head.decode("latin-1").split("\r\n")
                hdrs = {}
                for line in lines[1:]:
                    k, _, v = line.partition(":")
                    hdrs[k.strip().lower()] = v.strip()
                raw = bytearray(head + b"\r\n\r\n")
                body = hashlib.sha256()
                nbytes = 0
                if hdrs.get("transfer-encoding", "").lower() == "chunked":
                    while True:
                        while b"\r\n" not in rest:
                            rest += self._recv(s, 65536)
                        line, rest = rest.split(b"\r\n", 1)
                        raw += line + b"\r\n"
                        size = int(line.split(b";")[0], 16)
                        if size == 0:  # trailer fields, then an empty line
                            while True:
                                while b"\r\n" not in rest:
                                    rest += self._recv(s, 65536)
                                line, rest = rest.split(b"\r\n", 1)
                                raw += line + b"\r\n"
                                if line == b"":
                                    break
                            break
                        while len(rest) < size + 2:
                            d = self._recv(s, 65536)
                            if not d:
                                return
                            rest += d
                        body.update(rest[:size])
                        nbytes += size
                        if nbytes <= 1 << 16:
                            raw += rest[:size + 2]
                        rest = rest[size + 2:]
                else:
                    left = int(hdrs.get("content-length", "0"))
                    while left > 0:
                        if not rest:
                            rest = self._recv(s, min(left, 1 << 20))
                            if not rest:
                                return
                        take = rest[:left]
                        body.update(take)
                        nbytes += len(take)
                        left -= len(take)
                        rest = rest[len(take):]
                self.requests.append({"raw": bytes(raw), "headers": hdrs, "bytes": nbytes,
                                      "sha256": body.hexdigest()})
                reply = json.dumps({"bytes": nbytes, "sha256": body.hexdigest()}).encode()
                s.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                          % (len(reply), reply))
                buf = rest
        except OSError:
            return
        finally:
            s.close()

    def stop(self):
        self.stop_ev.set()
        self.lsock.close()


def pod_routes(cluster):
    """One route per mock pod endpoint, so any other path has no route (404)."""
    return [{"name": "r%d" % i, "match": {"path_prefix": p}, "split": [{"cluster": cluster, "weight": 100}]}
            for i, p in enumerate(["/echo", "/headers", "/bytes", "/sink", "/status/", "/api/"])]


def veer_env():
    if not harness.ASAN:
        return None
    opts = os.environ.get("ASAN_OPTIONS", "")
    return {"ASAN_OPTIONS": (opts + ":" if opts else "") + "quarantine_size_mb=16:thread_local_quarantine_size_kb=256"}


def setUpModule():
    global POD, CAP, VEER
    harness.require_binaries()
    for tool in ("curl", "nghttp", "h2load"):
        if shutil.which(tool) is None:
            raise AssertionError("%s not installed (apt-get install -y curl nghttp2-client)" % tool)
    POD = harness.MockPod("blue-1")
    CAP = CaptureServer()
    dead = harness.free_port()
    routes = pod_routes("blue") + [
        {"name": "slow", "match": {"path_prefix": "/slow"}, "split": [{"cluster": "blue", "weight": 100}],
         "timeout": "%dms" % int(1500 * harness.SLOW)},
        {"name": "capture", "match": {"path_prefix": "/capture"}, "split": [{"cluster": "cap", "weight": 100}],
         "timeout": "120s"},
        {"name": "dead", "match": {"path_prefix": "/dead"}, "split": [{"cluster": "dead", "weight": 100}]},
    ]
    cfg = base_config({"blue": [POD.addr], "cap": [CAP.addr], "dead": ["127.0.0.1:%d" % dead]}, routes,
                      workers=1, limits={"max_body_bytes": 256 * MB})
    VEER = Veer(cfg, env=veer_env())


def tearDownModule():
    CAP.stop()


def curl_h2(*args, timeout=60):
    cmd = ["curl", "-sS", "--http2-prior-knowledge", "--max-time", str(int(timeout * harness.SLOW))] + list(args)
    return subprocess.run(cmd, capture_output=True, timeout=timeout * harness.SLOW + 10)


# ---------------------------------------------------------------- tests

class BodiesTest(unittest.TestCase):
    def test_curl_post_bodies_intact(self):
        for size in (0, 1, 64 * 1024, 10 * MB):
            body = os.urandom(size)
            path = os.path.join(harness.TMP, "body-%d" % size)
            with open(path, "wb") as f:
                f.write(body)
            r = curl_h2("-o", "-", "-w", "\n%{http_code} %{http_version}", "--data-binary", "@" + path,
                        "-H", "content-type: application/octet-stream", "http://127.0.0.1:%d/echo" % VEER.port)
            self.assertEqual(r.returncode, 0, r.stderr)
            out, _, tail = r.stdout.rpartition(b"\n")
            self.assertEqual(tail, b"200 2", "size %d: %r" % (size, tail))
            self.assertEqual(len(out), size, "size %d echoed as %d bytes" % (size, len(out)))
            self.assertTrue(out == body, "size %d: echoed bytes differ" % size)

    def test_curl_get_10mb(self):
        r = curl_h2("-o", "-", "http://127.0.0.1:%d/bytes?n=%d" % (VEER.port, 10 * MB))
        self.assertEqual(r.returncode, 0, r.stderr)
        pattern = bytes(range(97, 123)) * (10 * MB // 26 + 2)
        self.assertEqual(len(r.stdout), 10 * MB)
        self.assertTrue(r.stdout == pattern[:10 * MB])

    def test_nghttp_upload_and_download(self):
        path = os.path.join(harness.TMP, "nghttp-body")
        body = os.urandom(300 * 1024)
        with open(path, "wb") as f:
            f.write(body)
        r = subprocess.run(["nghttp", "-s", "-d", path, "http://127.0.0.1:%d/sink" % VEER.port],
                           capture_output=True, timeout=30 * harness.SLOW)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout.decode(), r"\s200\s", r.stdout)
        r = subprocess.run(["nghttp", "http://127.0.0.1:%d/bytes?n=70000" % VEER.port],
                           capture_output=True, timeout=30 * harness.SLOW)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(len(r.stdout), 70000)

    def test_python_h2_bodies(self):
        with H2Conn(VEER.port) as c:
            sids = {}
            for size in (0, 1, 64 * 1024, 1 * MB):
                body = os.urandom(size)
                sids[c.request("POST", "/echo", headers=[("content-type", "application/octet-stream")],
                               body=body)] = body
            # GET without a body: END_STREAM on the HEADERS frame
            get = c.request("GET", "/bytes?n=5&cl=1")
            for sid, body in sids.items():
                st = c.response(sid)
                self.assertEqual(st["status"], 200)
                self.assertEqual(c.header(sid, "x-echo-bytes"), str(len(body)))
                self.assertTrue(bytes(st["data"]) == body, "body of %d bytes differs" % len(body))
            st = c.response(get)
            self.assertEqual((st["status"], bytes(st["data"])), (200, b"abcde"))
            self.assertEqual(c.header(get, "content-length"), "5")

    def test_content_length_body_and_head(self):
        with H2Conn(VEER.port) as c:
            body = os.urandom(40000)
            sid = c.request("POST", "/capture/cl", headers=[("content-length", str(len(body)))], body=body)
            st = c.response(sid)
            self.assertEqual(st["status"], 200)
            req = CAP.requests[-1]
            self.assertEqual(req["headers"].get("content-length"), str(len(body)))
            self.assertNotIn("transfer-encoding", req["headers"])
            self.assertEqual(req["sha256"], hashlib.sha256(body).hexdigest())
            head = c.response(c.request("HEAD", "/bytes?n=1234"))
            self.assertEqual(head["status"], 200)
            self.assertEqual(bytes(head["data"]), b"")


class ConcurrencyTest(unittest.TestCase):
    def test_100_concurrent_streams(self):
        with H2Conn(VEER.port, timeout=30 * harness.SLOW) as c:
            c.wait(lambda: 3 in c.remote_settings, what="server SETTINGS")
            self.assertEqual(c.remote_settings[3], 100)  # SETTINGS_MAX_CONCURRENT_STREAMS
            sids = [c.request("GET", "/slow?ms=300") for _ in range(100)]
            for sid in sids:
                st = c.response(sid)
                self.assertEqual(st["status"], 200, st)
                self.assertEqual(json.loads(bytes(st["data"]))["slept_ms"], 300)
            self.assertEqual(len(set(sids)), 100)

    def test_streams_beyond_the_limit_are_refused(self):
        # Sent before the client saw veer's SETTINGS: the ones over 100 get
        # REFUSED_STREAM (safe to retry), the rest are answered.
        with H2Conn(VEER.port, timeout=30 * harness.SLOW) as c:
            sids = []
            for _ in range(110):
                sid = c.conn.get_next_available_stream_id()
                c.conn.send_headers(sid, [(b":method", b"GET"), (b":path", b"/slow?ms=200"), (b":scheme", b"http"),
                                          (b":authority", b"h2.test")], end_stream=True)
                c._st(sid)
                sids.append(sid)
            c.flush()
            for sid in sids:
                c.response(sid)
            refused = [s for s in sids if c.streams[s]["reset"] == REFUSED_STREAM]
            ok = [s for s in sids if c.streams[s]["status"] == 200]
            self.assertEqual(len(refused), 10, {s: c.streams[s]["reset"] for s in sids})
            self.assertEqual(len(ok), 100)
            self.assertEqual(c.goaways, [])

    def test_h2load(self):
        r = subprocess.run(["h2load", "-n", "20000", "-c", "10", "-m", "10",
                            "http://127.0.0.1:%d/status/200" % VEER.port],
                           capture_output=True, text=True, timeout=120 * harness.SLOW)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("status codes: 20000 2xx, 0 3xx, 0 4xx, 0 5xx", r.stdout, r.stdout)
        self.assertIn("20000 succeeded, 0 failed, 0 errored", r.stdout, r.stdout)


# Each entry: a request RFC 9113 §8.3 (or §8.2.2) makes malformed, as
# (name, pseudo-headers, regular headers).
GOOD_PSEUDO = [(":method", "GET"), (":path", "/headers"), (":scheme", "http"), (":authority", "h2.test")]
VIOLATIONS = [
    ("missing :method", [(":path", "/headers"), (":scheme", "http"), (":authority", "h2.test")], []),
    ("missing :path", [(":method", "GET"), (":scheme", "http"), (":authority", "h2.test")], []),
    ("missing :scheme", [(":method", "GET"), (":path", "/headers"), (":authority", "h2.test")], []),
    ("empty :path", [(":method", "GET"), (":path", ""), (":scheme", "http"), (":authority", "h2.test")], []),
    ("doubled :method", GOOD_PSEUDO + [(":method", "POST")], []),
    ("doubled :path", GOOD_PSEUDO + [(":path", "/other")], []),
    ("doubled :scheme", GOOD_PSEUDO + [(":scheme", "https")], []),
    ("unknown pseudo-header", GOOD_PSEUDO + [(":foo", "bar")], []),
    ("pseudo-header after a regular one", [(":method", "GET"), (":path", "/headers"), (":scheme", "http")],
     [("x-a", "1"), (":authority", "h2.test")]),
    ("upper-case name", GOOD_PSEUDO, [("X-Upper", "1")]),
    ("connection", GOOD_PSEUDO, [("connection", "close")]),
    ("keep-alive", GOOD_PSEUDO, [("keep-alive", "timeout=5")]),
    ("proxy-connection", GOOD_PSEUDO, [("proxy-connection", "keep-alive")]),
    ("transfer-encoding", GOOD_PSEUDO, [("transfer-encoding", "chunked")]),
    ("upgrade", GOOD_PSEUDO, [("upgrade", "websocket")]),
    ("te other than trailers", GOOD_PSEUDO, [("te", "gzip")]),
    ("Host conflicting with :authority", GOOD_PSEUDO, [("host", "other.example")]),
    ("userinfo in :authority", [(":method", "GET"), (":path", "/headers"), (":scheme", "http"),
                                (":authority", "user@h2.test")], []),
    ("path not absolute", [(":method", "GET"), (":path", "headers"), (":scheme", "http"),
                           (":authority", "h2.test")], []),
    ("CR LF in a value", GOOD_PSEUDO, [("x-a", "1\r\nx-injected: 1")]),
    ("NUL in a value", GOOD_PSEUDO, [("x-a", "a\x00b")]),
    ("leading space in a value", GOOD_PSEUDO, [("x-a", " a")]),
    ("space in a name", GOOD_PSEUDO, [("x a", "1")]),
]


class ValidationTest(unittest.TestCase):
    def test_each_violation_is_a_stream_error(self):
        with H2Conn(VEER.port) as c:
            before = c.request("GET", "/slow?ms=%d" % int(400 * harness.SLOW))  # in flight across all cases
            for name, pseudo, headers in VIOLATIONS:
                with self.subTest(name):
                    bad = c.request(None, None, headers=headers, pseudo=pseudo)
                    good = c.request("GET", "/headers")
                    st = c.response(bad)
                    self.assertEqual(st["reset"], PROTOCOL_ERROR, "%s: %r" % (name, st))
                    self.assertIsNone(st["status"], name)
                    ok = c.response(good)
                    self.assertEqual(ok["status"], 200, "%s: the next stream: %r" % (name, ok))
            self.assertEqual(c.response(before)["status"], 200)
            self.assertEqual(c.goaways, [])
            self.assertFalse(c.closed)
        # nothing malformed reached the pod
        st, body = h2_get(VEER.port, "/status/200")
        self.assertEqual(st, 200)

    def test_host_equal_to_authority_is_fine(self):
        with H2Conn(VEER.port) as c:
            sid = c.request("GET", "/headers", headers=[("host", "H2.test")])
            st = c.response(sid)
            self.assertEqual(st["status"], 200)
            self.assertEqual(json.loads(bytes(st["data"]))["host"], "h2.test")

    def test_authority_or_host_becomes_the_upstream_host(self):
        with H2Conn(VEER.port) as c:
            a = c.request("GET", "/headers", authority="svc.example:8443")
            h = c.request(None, None, pseudo=[(":method", "GET"), (":path", "/headers"), (":scheme", "http")],
                          headers=[("host", "hostonly.example")])
            self.assertEqual(json.loads(bytes(c.response(a)["data"]))["host"], "svc.example:8443")
            self.assertEqual(json.loads(bytes(c.response(h)["data"]))["host"], "hostonly.example")

    def test_cookie_crumbs_are_joined(self):
        with H2Conn(VEER.port) as c:
            sid = c.request("GET", "/headers", headers=[("cookie", "a=1"), ("x-between", "y"), ("cookie", "b=2"),
                                                        ("cookie", "veer-pool=green")])
            got = json.loads(bytes(c.response(sid)["data"]))
            self.assertEqual(got["cookie"], "a=1; b=2; veer-pool=green")  # one field, not an array
            self.assertEqual(got["x-between"], "y")

    def test_request_trailers_reach_the_upstream(self):
        # No content-length: the HTTP/1.1 upstream gets a chunked body with
        # the trailers in its last chunk.
        with H2Conn(VEER.port) as c:
            sid = c.request("POST", "/capture/trailers", end=False)
            c.send_body(sid, b"hello trailers", end=False)
            c.conn.send_headers(sid, [(b"x-checksum", b"abc123"), (b"x-count", b"1")], end_stream=True)
            c.flush()
            st = c.response(sid)
            self.assertEqual(st["status"], 200, st)
        req = CAP.requests[-1]
        self.assertEqual(req["headers"].get("transfer-encoding"), "chunked")
        self.assertTrue(req["raw"].endswith(b"0\r\nx-checksum: abc123\r\nx-count: 1\r\n\r\n"), req["raw"][-120:])
        self.assertEqual(req["bytes"], 14)

    def test_expect_100_continue(self):
        with H2Conn(VEER.port) as c:
            sid = c.request("POST", "/echo", headers=[("expect", "100-continue")], end=False)
            c.wait(lambda: c.streams[sid]["informational"], what="100 Continue")
            self.assertEqual(dict(c.streams[sid]["informational"][0])[b":status"], b"100")
            c.send_body(sid, b"after continue")
            st = c.response(sid)
            self.assertEqual((st["status"], bytes(st["data"])), (200, b"after continue"))


class LocalReplyTest(unittest.TestCase):
    def test_local_replies_on_streams(self):
        with H2Conn(VEER.port, timeout=20 * harness.SLOW) as c:
            nf = c.request("GET", "/nowhere")
            dead = c.request("GET", "/dead")
            slow = c.request("GET", "/slow?ms=%d" % int(4000 * harness.SLOW))
            pod503 = c.request("GET", "/status/503")
            for sid, status, error in ((nf, 404, "no route matches"), (dead, 503, "upstream connect failure"),
                                       (slow, 504, "upstream timeout")):
                st = c.response(sid)
                self.assertEqual(st["status"], status, st)
                js = json.loads(bytes(st["data"]))
                self.assertEqual(js["error"], error)
                self.assertEqual(c.header(sid, "content-type"), "application/json")
                self.assertEqual(int(c.header(sid, "content-length")), len(st["data"]))
            st = c.response(pod503)
            self.assertEqual(st["status"], 503)
            self.assertEqual(json.loads(bytes(st["data"]))["pod"], "blue-1")
            self.assertEqual(c.goaways, [])

    def test_answer_before_the_body_ends_resets_the_rest(self):
        # 404 while the client still sends: the response completes, then
        # RST_STREAM NO_ERROR tells the client to stop (RFC 9113 §8.1).
        with H2Conn(VEER.port) as c:
            sid = c.request("POST", "/nowhere", end=False)
            c.send_body(sid, b"x" * 1000, end=False)
            c.wait(lambda: c.done(sid) and c.streams[sid]["status"] is not None, what="404")
            self.assertEqual(c.streams[sid]["status"], 404)
            c.wait(lambda: c.streams[sid]["reset"] is not None or c.streams[sid]["ended"], what="end")
            self.assertIn(c.streams[sid]["reset"], (None, 0))
            ok = c.request("GET", "/status/200")
            self.assertEqual(c.response(ok)["status"], 200)


class SameListenerTest(unittest.TestCase):
    def test_http1_still_served(self):
        st, hd, body = VEER.request("GET", "/status/200")
        self.assertEqual(st, 200)
        r, closed = harness.raw_request(VEER.port, b"GET /headers HTTP/1.1\r\nHost: one.example\r\n\r\n")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()["host"], "one.example")
        self.assertFalse(closed)
        # "PRI" that is not the preface stays HTTP/1.1 (and is refused)
        r, _ = harness.raw_request(VEER.port, b"PRI /x HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertNotEqual(r.status, 200)

    def test_preface_in_pieces(self):
        with socket.create_connection(("127.0.0.1", VEER.port), timeout=10) as s:
            for i in range(0, len(PREFACE), 5):
                s.sendall(PREFACE[i:i + 5])
                time.sleep(0.05)
            enc = hpack.Encoder()
            block = enc.encode([(":method", "GET"), (":path", "/status/200"), (":scheme", "http"),
                                (":authority", "h2.test")])
            s.sendall(frame(SETTINGS, 0, 0) + frame(HEADERS, END_STREAM | END_HEADERS, 1, block))
            got, deadline = b"", time.time() + 10
            dec = hpack.Decoder()
            status = None
            while status is None and time.time() < deadline:
                got += s.recv(65536)
                while len(got) >= 9 and len(got) >= 9 + int.from_bytes(got[:3], "big"):
                    n = int.from_bytes(got[:3], "big")
                    if got[3] == HEADERS and int.from_bytes(got[5:9], "big") == 1:
                        status = dict(dec.decode(got[9:9 + n]))[":status"]
                    got = got[9 + n:]
            self.assertEqual(status, "200")


class FlowControlTest(unittest.TestCase):
    def test_slow_reader_keeps_memory_flat(self):
        # A client with a 64 KiB window that reads 50 MB at ~1 MB/s: veer
        # holds at most a buffer per stream and stops reading the pod.
        base = VEER.rss_kb()
        with H2Conn(VEER.port, auto_ack=False, settings={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 65535},
                    rcvbuf=64 * 1024) as c:
            sid = c.request("GET", "/bytes?n=%d" % (50 * MB))
            got = 0
            with RssSampler(VEER) as rss:
                t0 = time.time()
                while time.time() - t0 < 3.0:
                    c.pump(0.1)
                    st = c.streams[sid]
                    fresh = len(st["data"]) - got
                    if fresh > 0:
                        got += fresh
                        c.conn.acknowledge_received_data(fresh, sid)
                        c.flush()
                    time.sleep(0.05)
            self.assertEqual(c.streams[sid]["status"], 200)
            self.assertGreater(got, 200 * 1024, "the slow reader got only %d bytes" % got)
            self.assertLess(got, 50 * MB)
            growth = rss.peak() - base
            self.assertLess(growth, GROWTH_LIMIT_KB, "veer RSS grew %d kB under a slow HTTP/2 reader" % growth)
            c.conn.reset_stream(sid, CANCEL)
            c.flush()
        st, body = h2_get(VEER.port, "/status/200")
        self.assertEqual(st, 200)

    def test_100mb_download_flat_memory(self):
        # 100 MB down over HTTP/2 at full speed: every byte arrives and
        # veer's memory stays flat (the body is never held whole).
        base = VEER.rss_kb()
        with RssSampler(VEER) as rss:
            r = curl_h2("-o", "/dev/null", "-w", "%{http_code} %{size_download}",
                        "http://127.0.0.1:%d/bytes?n=%d" % (VEER.port, 100 * MB), timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.decode().split(), ["200", str(100 * MB)])
        growth = rss.peak() - base
        self.assertLess(growth, GROWTH_LIMIT_KB, "veer RSS grew %d kB during a 100 MB HTTP/2 download" % growth)

    def test_upload_to_slow_sink_is_bounded(self):
        # 100 MB up, the upstream reads at ~2 MB/s for 3 s, then at full
        # speed: veer's window updates follow the upstream, memory stays flat,
        # and every byte arrives.
        size = 100 * MB
        block = os.urandom(MB)
        digest = hashlib.sha256()
        for _ in range(size // MB):
            digest.update(block)
        CAP.rate = 2 * MB
        base = VEER.rss_kb()
        done = {}

        def release():
            time.sleep(3.0)
            done["sent_when_released"] = CAP.received
            CAP.rate = None

        t = threading.Thread(target=release)
        with H2Conn(VEER.port, timeout=120 * harness.SLOW) as c, RssSampler(VEER) as rss:
            t.start()
            sid = c.request("POST", "/capture/sink", headers=[("content-length", str(size))], end=False)
            c.send_body(sid, (block for _ in range(size // MB)), deadline=time.time() + 120 * harness.SLOW)
            st = c.response(sid, 120 * harness.SLOW)
        t.join()
        self.assertEqual(st["status"], 200, st)
        js = json.loads(bytes(st["data"]))
        self.assertEqual(js["bytes"], size)
        self.assertEqual(js["sha256"], digest.hexdigest())
        self.assertLess(done["sent_when_released"], 20 * MB, "the slow phase moved too much: not slow?")
        growth = rss.peak() - base
        self.assertLess(growth, GROWTH_LIMIT_KB, "veer RSS grew %d kB during a 100 MB upload to a slow sink" % growth)


class TlsTest(unittest.TestCase):
    """ALPN "h2" on a TLS listener hands the handshaken socket to the same
    codec (plaintext from then on)."""

    def test_h2_over_tls(self):
        cert, key = os.path.join(harness.TMP, "h2.crt"), os.path.join(harness.TMP, "h2.key")
        r = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                            "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"],
                           capture_output=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        tls_port = harness.free_port()
        cfg = base_config({"blue": [POD.addr]}, pod_routes("blue"), workers=1)
        cfg["listeners"].append({"name": "https", "address": "127.0.0.1:%d" % tls_port,
                                 "tls": {"cert": cert, "key": key, "alpn": ["h2", "http/1.1"]}})
        v = Veer(cfg, name="veer-tls", env=veer_env())
        try:
            body = os.urandom(MB)
            path = os.path.join(harness.TMP, "tls-body")
            with open(path, "wb") as f:
                f.write(body)
            base = ["curl", "-sS", "-k", "--http2", "--max-time", str(int(30 * harness.SLOW))]
            r = subprocess.run(base + ["-o", "-", "-w", "\n%{http_code} %{http_version}",
                                       "https://127.0.0.1:%d/headers" % tls_port], capture_output=True, timeout=60)
            self.assertEqual(r.returncode, 0, r.stderr)
            out, _, tail = r.stdout.rpartition(b"\n")
            self.assertEqual(tail, b"200 2")
            self.assertEqual(json.loads(out)["x-forwarded-proto"], "https")
            r = subprocess.run(base + ["-o", "-", "--data-binary", "@" + path,
                                       "https://127.0.0.1:%d/echo" % tls_port], capture_output=True, timeout=60)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertTrue(r.stdout == body, "1 MB over TLS h2 came back as %d bytes" % len(r.stdout))
        finally:
            v.stop()


class DrainTest(unittest.TestCase):
    def test_drain_sends_goaway_and_finishes_streams(self):
        # Raw frames: python-h2 takes any GOAWAY as the end of the
        # connection, while a graceful one lets streams in flight finish.
        pod = harness.MockPod("drain-1")
        cfg = base_config({"blue": [pod.addr]}, pod_routes("blue") + [
            {"name": "slow", "match": {"path_prefix": "/slow"}, "split": [{"cluster": "blue", "weight": 100}]}],
            workers=1, limits={"drain_timeout": "20s"})
        v = Veer(cfg, name="veer-drain", env=veer_env())
        c = RawH2(v.port, timeout=20 * harness.SLOW, answer_pings=True)
        try:
            c.send(frame(HEADERS, END_STREAM | END_HEADERS, 1,
                         c.headers_block("GET", "/slow?ms=%d" % int(1500 * harness.SLOW))))
            c.wait_for(lambda: any(t == SETTINGS for t, _, _, _ in c.frames), 5, "server SETTINGS")
            time.sleep(0.2)
            v.signal(signal.SIGTERM)
            # first the notice (last stream 2^31-1), then the real GOAWAY
            c.wait_for(lambda: len(c.goaways()) >= 2, 10 * harness.SLOW, "two GOAWAY frames")
            self.assertEqual(c.goaways()[0], (0, 2 ** 31 - 1))
            self.assertEqual(c.goaways()[1], (0, 1))
            c.wait_for(lambda: c.response(1)[2], 10 * harness.SLOW, "the stream in flight to finish")
            status, body, _ = c.response(1)
            self.assertEqual(status, 200)
            self.assertEqual(json.loads(body)["pod"], "drain-1")
            self.assertTrue(c.wait_closed(10 * harness.SLOW), "veer kept the drained connection open")
            self.assertEqual(v.proc.wait(20 * harness.SLOW), 0)
        finally:
            c.close()
            v.stop()
            pod.stop()


if __name__ == "__main__":
    harness.main()
