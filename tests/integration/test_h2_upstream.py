"""HTTP/2 upstreams (protocol h2c): an HTTP/1.1 client through veer to the
mock pod's h2c face. Bodies of every size arrive intact, the peer's
SETTINGS_MAX_CONCURRENT_STREAMS is never exceeded (requests wait in veer's
bounded FIFO, overflow is a 503 with x-veer-overloaded), GOAWAY and
REFUSED_STREAM lose no request, resets and timeouts give 502 and 504 without
taking the connection down, and a slow reader holds veer's memory flat
through HTTP/2 flow control."""

import collections
import http.client
import os
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import MockPod, RawConn, Veer, base_config, do_request, fan_out, free_port  # noqa: E402

MiB = 1 << 20


def setUpModule():
    harness.require_binaries()


def h2c_config(pod, workers=1, route_extra=None, **cluster):
    c = {"endpoints": [pod.addr], "protocol": "h2c"}
    c.update(cluster)
    r = {"name": "all", "match": {"path_prefix": "/"}, "split": [{"cluster": "pod", "weight": 100}]}
    r.update(route_extra or {})
    return base_config({"pod": c}, [r], workers=workers)


def pattern(n):
    """What /bytes?n= answers: 'a'..'z' over and over."""
    base = bytes(range(ord("a"), ord("z") + 1))
    return (base * (n // 26 + 1))[:n]


def concurrent(port, n, method, path, body=None, headers=None):
    """n requests at once, one client connection each: [(status, headers)]."""
    out = [None] * n
    start = threading.Barrier(n)

    def run(i):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        try:
            start.wait()
            st, hd, _ = do_request(c, method, path, body, headers)
            out[i] = (st, hd)
        except Exception as e:  # noqa: BLE001 - recorded, asserted on below
            out[i] = (0, {"error": repr(e)})
        finally:
            c.close()

    ts = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return out


class H2UpstreamTest(unittest.TestCase):
    def test_bodies_intact(self):
        pod = MockPod("h2-1")
        veer = Veer(h2c_config(pod))
        conn = veer.connection(timeout=30)
        for n in (0, 1, 16383, 16384, 65537, MiB + 3, 10 * MiB):
            for cl in (0, 1):
                st, hd, body = do_request(conn, "GET", "/bytes?n=%d&cl=%d" % (n, cl))
                self.assertEqual(st, 200, body[:200])
                self.assertEqual(len(body), n, "GET /bytes?n=%d&cl=%d" % (n, cl))
                self.assertTrue(body == pattern(n), "GET /bytes?n=%d: bytes differ" % n)
                self.assertEqual(hd.get("x-pod"), "h2-1")
        rnd = random.Random(7)
        for n in (0, 1, 16383, 16385, 65536 + 7, MiB + 3, 10 * MiB):
            data = rnd.randbytes(n)
            st, hd, body = do_request(conn, "POST", "/echo", data, {"content-type": "application/octet-stream"})
            self.assertEqual(st, 200)
            self.assertEqual(hd.get("x-echo-bytes"), str(n))
            self.assertTrue(body == data, "POST /echo of %d bytes: bytes differ" % n)
        # a chunked upload (length unknown to veer up front)
        data = rnd.randbytes(3 * MiB + 5)
        conn.request("POST", "/echo", body=iter([data[i:i + 100000] for i in range(0, len(data), 100000)]),
                     encode_chunked=True, headers={"content-type": "application/octet-stream"})
        r = conn.getresponse()
        self.assertEqual(r.status, 200)
        self.assertTrue(r.read() == data, "chunked upload: bytes differ")
        conn.close()
        # everything above went over one multiplexed connection
        self.assertEqual(pod.stats()["h2_connections_total"], 1)
        veer.stop()
        pod.stop()

    def test_peer_stream_limit_with_pending_queue(self):
        pod = MockPod("h2-1", latency="40ms")
        pod.fault(max_concurrent_streams=10)
        veer = Veer(h2c_config(pod))
        res = fan_out(veer.port, 200, "GET", "/status/200", threads=50, timeout=20)
        codes = collections.Counter(r[1] for r in res)
        self.assertEqual(codes, {200: 200}, codes)
        st = pod.stats()
        self.assertLessEqual(st["h2_peak_streams"], 10, "more streams open at the pod than it allows: %r" % st)
        self.assertGreaterEqual(st["h2_peak_streams"], 8, "the stream slots were not used: %r" % st)
        self.assertEqual(st["h2_refused_streams"], 0)
        self.assertEqual(st["h2_connections_total"], 1)
        veer.stop()
        pod.stop()

    def test_pending_overflow_503(self):
        pod = MockPod("h2-1", latency="600ms")
        pod.fault(max_concurrent_streams=2)
        veer = Veer(h2c_config(pod, circuit_breakers={"max_pending_requests": 5}))
        st, _, _ = veer.request("GET", "/health")  # the connection is up and its SETTINGS known
        self.assertEqual(st, 200)
        res = concurrent(veer.port, 30, "GET", "/status/200")
        codes = collections.Counter(s for s, _ in res)
        self.assertEqual(set(codes) - {200, 503}, set(), codes)
        self.assertGreaterEqual(codes[503], 15, codes)
        self.assertGreaterEqual(codes[200], 7, "2 streams + 5 pending should have been served: %r" % codes)
        for s, hd in res:
            if s == 503:
                self.assertEqual(hd.get("x-veer-overloaded"), "true", hd)
        self.assertLessEqual(pod.stats()["h2_peak_streams"], 2)
        pending = cluster_status(veer, "pod")["circuit_breakers"]["max_pending_requests"]
        self.assertEqual(pending["active"], 0, "every pending slot was given back: %r" % pending)
        self.assertGreaterEqual(pending["overflows"], codes[503], pending)
        veer.stop()
        pod.stop()

    def test_goaway_mid_load_loses_nothing(self):
        pod = MockPod("h2-1", latency="5ms")
        pod.fault(goaway_after=20)
        veer = Veer(h2c_config(pod))
        body = os.urandom(3000)
        res = fan_out(veer.port, 300, "POST", "/echo", body, threads=20, timeout=20)
        codes = collections.Counter(r[1] for r in res)
        self.assertEqual(codes, {200: 300}, codes)
        res = fan_out(veer.port, 200, "GET", "/status/200", threads=20, timeout=20)
        codes = collections.Counter(r[1] for r in res)
        self.assertEqual(codes, {200: 200}, codes)
        st = pod.stats()
        self.assertGreaterEqual(st["h2_goaways_sent"], 10, st)
        self.assertGreaterEqual(st["h2_connections_total"], 10, st)
        # a server that takes a quarter of the requests in flight per connection
        pod.fault(goaway_after=5)
        res = fan_out(veer.port, 200, "POST", "/echo", body, threads=20, timeout=20)
        codes = collections.Counter(r[1] for r in res)
        self.assertEqual(codes, {200: 200}, codes)
        veer.stop()
        pod.stop()

    def test_refused_stream_retried_once(self):
        pod = MockPod("h2-1")
        veer = Veer(h2c_config(pod))
        self.assertEqual(veer.request("GET", "/health")[0], 200)
        pod.fault(refuse_rate=0.5)
        n = 400
        for method, body in (("GET", None), ("POST", b"y" * 2000)):
            res = fan_out(veer.port, n, method, "/echo", body, threads=8, timeout=20)
            codes = collections.Counter(r[1] for r in res)
            self.assertEqual(set(codes) - {200, 502}, set(), codes)
            ok = codes[200] / n
            # sent again once: 1 - 0.5^2 = 75% (never: 50%, twice: 87.5%)
            self.assertTrue(0.65 < ok < 0.85, "%s success %.2f with 50%% refused streams %r" % (method, ok, codes))
        pod.fault(refuse_rate=1.0)
        t0 = time.time()
        st, _, body = veer.request("GET", "/health")
        self.assertEqual(st, 502, body)
        self.assertLess(time.time() - t0, 2 * harness.SLOW)
        pod.fault(refuse_rate=0.0)
        self.assertEqual(veer.request("GET", "/health")[0], 200)
        self.assertEqual(pod.stats()["h2_connections_total"], 1, "a refused stream must not cost the connection")
        veer.stop()
        # a route that retries nothing does not get refused streams sent again either
        veer = Veer(h2c_config(pod, route_extra={"retry": {"on": []}}))
        pod.fault(refuse_rate=0.5)
        res = fan_out(veer.port, n, "POST", "/echo", b"y" * 100, threads=8, timeout=20)
        ok = collections.Counter(r[1] for r in res)[200] / n
        self.assertTrue(0.38 < ok < 0.62, "success %.2f with 50%% refused streams and no retries" % ok)
        veer.stop()
        pod.stop()

    def test_upstream_reset_502(self):
        pod = MockPod("h2-1")
        veer = Veer(h2c_config(pod))
        self.assertEqual(veer.request("GET", "/health")[0], 200)
        pod.fault(reset_rate=1.0)
        st, hd, body = veer.request("POST", "/echo", b"z" * 100)
        self.assertEqual(st, 502, body)
        self.assertIn(b"reset", body)
        st, hd, body = veer.request("GET", "/status/200")
        self.assertEqual(st, 502, body)
        resets = pod.stats()["resets"]
        self.assertEqual(resets, 3, "the POST once, the idempotent GET once more")
        pod.fault(reset_rate=0.0)
        self.assertEqual(veer.request("GET", "/status/200")[0], 200)
        self.assertEqual(pod.stats()["h2_connections_total"], 1, "a stream reset must not cost the connection")
        veer.stop()
        pod.stop()

    def test_route_timeout_504_cancels_the_stream_only(self):
        pod = MockPod("h2-1")
        veer = Veer(h2c_config(pod, route_extra={"timeout": "500ms"}))
        self.assertEqual(veer.request("GET", "/health")[0], 200)
        t0 = time.time()
        st, _, body = veer.request("GET", "/slow?ms=3000")
        took = time.time() - t0
        self.assertEqual(st, 504, body)
        self.assertGreater(took, 0.4)
        self.assertLess(took, 1.0 * harness.SLOW, "504 after %.2fs for a 500ms timeout" % took)
        harness.wait_until(lambda: pod.stats()["client_aborts"] == 1, 3, what="the pod to see the stream cancelled")
        self.assertEqual(veer.request("GET", "/slow?ms=100")[0], 200)
        st = pod.stats()
        self.assertEqual(st["h2_connections_total"], 1, st)
        self.assertEqual(st["h2_streams_active"], 0, st)
        veer.stop()
        pod.stop()

    def test_connect_failures(self):
        dead = "127.0.0.1:%d" % free_port()
        veer = Veer(base_config({"dead": {"endpoints": [dead], "protocol": "h2c", "connect_timeout": "1s"}},
                                [{"name": "all", "split": [{"cluster": "dead", "weight": 100}]}]))
        t0 = time.time()
        st, _, body = veer.request("GET", "/x")
        self.assertEqual(st, 503, body)
        self.assertLess(time.time() - t0, 1.5 * harness.SLOW)
        veer.stop()
        # an HTTP/1.1-only upstream answers the preface with a 400 and closes
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        port = srv.getsockname()[1]

        def h1_only():
            while True:
                try:
                    c, _ = srv.accept()
                except OSError:
                    return
                c.recv(4096)
                c.sendall(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                c.close()

        threading.Thread(target=h1_only, daemon=True).start()
        veer = Veer(base_config({"h1": {"endpoints": ["127.0.0.1:%d" % port], "protocol": "h2c"}},
                                [{"name": "all", "split": [{"cluster": "h1", "weight": 100}]}]))
        t0 = time.time()
        st, _, body = veer.request("GET", "/x")
        self.assertIn(st, (502, 503), body)
        self.assertLess(time.time() - t0, 1.5 * harness.SLOW)
        veer.stop()
        srv.close()

    def test_slow_reader_bounded_memory(self):
        pod = MockPod("h2-1")
        veer = Veer(h2c_config(pod))
        self.assertEqual(veer.request("GET", "/health")[0], 200)
        before = veer.rss_kb()
        total = 50 * MiB
        with RawConn(veer.port, timeout=30, rcvbuf=65536) as c:
            c.send(b"GET /bytes?n=%d&cl=1 HTTP/1.1\r\nhost: x\r\n\r\n" % total)
            head = c.read_head()
            self.assertEqual(head.status, 200)
            self.assertEqual(head.header("content-length"), str(total))
            got = len(c.buf)
            deadline = time.time() + 2.0
            while time.time() < deadline:  # a slow reader: 64 KiB every 50 ms
                got += len(c.sock.recv(65536))
                time.sleep(0.05)
            grown = veer.rss_kb() - before
            self.assertLess(got, total // 2)
            self.assertLess(grown, 20 * 1024, "veer grew by %d KiB behind a slow reader" % grown)
            c.sock.settimeout(30)
            while got < total:  # then fast, to the end
                data = c.sock.recv(1 << 20)
                if not data:
                    break
                got += len(data)
            self.assertEqual(got, total)
        veer.stop()
        pod.stop()

    def test_h2_over_tls(self):
        """protocol h2: TLS with ALPN h2, verified against the cluster's CA,
        to HAProxy terminating TLS in front of the pod's h2c face."""
        if shutil.which("haproxy") is None:
            raise AssertionError("haproxy is missing (apt-get install -y haproxy)")
        pod = MockPod("h2-1")
        d = os.path.join(harness.TMP, "tls")
        os.makedirs(d, exist_ok=True)
        cert, key, both = (os.path.join(d, n) for n in ("cert.pem", "key.pem", "both.pem"))
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                        "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
                       check=True, capture_output=True, timeout=60)
        with open(both, "wb") as f, open(cert, "rb") as c, open(key, "rb") as k:
            f.write(c.read() + k.read())
        port = free_port()
        cfg = os.path.join(d, "haproxy.cfg")
        with open(cfg, "w") as f:
            f.write("defaults\n  mode http\n  timeout connect 2s\n  timeout client 30s\n  timeout server 30s\n"
                    "frontend fe\n  bind 127.0.0.1:%d ssl crt %s alpn h2\n  default_backend be\n"
                    "backend be\n  server pod %s proto h2\n" % (port, both, pod.addr))
        proc, _, err = harness.spawn(["haproxy", "-db", "-f", cfg], "haproxy")
        harness.wait_until(lambda: proc.poll() is not None or _listening(port), 10, what="haproxy")
        self.assertIsNone(proc.poll(), harness.tail(err))
        cluster = {"endpoints": ["127.0.0.1:%d" % port], "protocol": "h2", "tls": {"ca": cert, "sni": "localhost"}}
        veer = Veer(base_config({"tls": cluster}, [{"name": "all", "split": [{"cluster": "tls", "weight": 100}]}],
                                workers=1))
        conn = veer.connection(timeout=30)
        st, hd, body = do_request(conn, "GET", "/bytes?n=%d" % MiB)
        self.assertEqual(st, 200, body[:200])
        self.assertTrue(body == pattern(MiB), "GET over h2+TLS: bytes differ")
        self.assertEqual(hd.get("x-pod"), "h2-1")
        data = os.urandom(MiB + 1)
        st, hd, body = do_request(conn, "POST", "/echo", data, {"content-type": "application/octet-stream"})
        self.assertEqual(st, 200)
        self.assertTrue(body == data, "POST over h2+TLS: bytes differ")
        conn.close()
        veer.stop()
        # a CA that did not sign the server's certificate: no connection, no request
        other = os.path.join(d, "other.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", os.path.join(d, "o.key"),
                        "-out", other, "-days", "1", "-subj", "/CN=localhost"], check=True, capture_output=True,
                       timeout=60)
        cluster["tls"]["ca"] = other
        veer = Veer(base_config({"tls": cluster}, [{"name": "all", "split": [{"cluster": "tls", "weight": 100}]}]))
        before = pod.stats()["requests_total"]
        st, _, body = veer.request("GET", "/status/200")
        self.assertEqual(st, 503, body)
        self.assertEqual(pod.stats()["requests_total"], before)
        veer.stop()
        harness.kill(proc)
        pod.stop()

    def test_h2_client_to_h2c_upstream(self):
        pod = MockPod("h2-1")
        veer = Veer(h2c_config(pod))
        if not h2_downstream(veer.port):
            self.skipTest("veer answers the HTTP/2 preface with HTTP/1.1 400: no HTTP/2 downstream in this build")
        data = os.urandom(MiB + 11)
        path = os.path.join(harness.TMP, "h2-body")
        with open(path, "wb") as f:
            f.write(data)
        out = subprocess.run(["curl", "-s", "--http2-prior-knowledge", "-X", "POST", "--data-binary", "@" + path,
                              "-H", "content-type: application/octet-stream",
                              "http://127.0.0.1:%d/echo" % veer.port], capture_output=True, timeout=30)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertTrue(out.stdout == data, "h2 -> h2c POST: bytes differ")
        out = subprocess.run(["curl", "-s", "--http2-prior-knowledge", "http://127.0.0.1:%d/bytes?n=%d" %
                              (veer.port, 3 * MiB)], capture_output=True, timeout=30)
        self.assertTrue(out.stdout == pattern(3 * MiB), "h2 -> h2c GET: bytes differ")
        veer.stop()
        pod.stop()


def cluster_status(veer, name):
    clusters = veer.status()["clusters"]
    if isinstance(clusters, dict):
        return clusters[name]
    return next(c for c in clusters if c.get("name") == name)


def _listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def h2_downstream(port):
    """True when veer speaks HTTP/2 with prior knowledge on its plain listener."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        try:
            first = s.recv(64)
        except socket.timeout:
            return False
    return not first.startswith(b"HTTP/1.1")


if __name__ == "__main__":
    harness.main()
