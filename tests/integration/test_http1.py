"""HTTP/1.1 framing (RFC 9112) on raw sockets: keep-alive, pipelining, request
bodies, 100-continue, the request shapes that must be refused (400 and the
connection closed), size limits (431, 413), hop-by-hop stripping and the
x-forwarded-* / x-request-id headers, isolation between connections, and the
JSON bodies of local replies."""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import RawConn, Veer, base_config, free_port  # noqa: E402

POD = None
MAX_HEADER = 4096
MAX_BODY = 1 << 20


def setUpModule():
    global POD, VEER
    harness.require_binaries()
    POD = harness.MockPod("blue-1")
    dead = "127.0.0.1:%d" % free_port()
    prefixes = ["/status/", "/echo", "/headers", "/sink", "/bytes", "/health", "/api/"]
    routes = [{"name": "r%d" % i, "match": {"path_prefix": p}, "split": [{"cluster": "blue", "weight": 100}]}
              for i, p in enumerate(prefixes)]
    routes.append({"name": "slow", "match": {"path_prefix": "/slow"},
                   "split": [{"cluster": "blue", "weight": 100}], "timeout": "1s"})
    routes.append({"name": "dead", "match": {"path_prefix": "/dead"},
                   "split": [{"cluster": "dead", "weight": 100}]})
    cfg = base_config({"blue": [POD.addr], "dead": {"endpoints": [dead], "connect_timeout": "1s"}}, routes,
                      limits={"max_header_bytes": MAX_HEADER, "max_body_bytes": MAX_BODY})
    VEER = Veer(cfg)


def req(method, path, headers=(), body=b"", host="t"):
    lines = ["%s %s HTTP/1.1" % (method, path)]
    if host is not None:
        lines.append("Host: " + host)
    lines += ["%s: %s" % h for h in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def assert_local_json(tc, r, status):
    tc.assertEqual(r.status, status, r)
    tc.assertIsNone(r.header("x-pod"), "local reply must not come from the pod: %r" % r)
    try:
        js = json.loads(r.body)
    except ValueError:
        tc.fail("local %d reply body is not JSON: %r" % (status, r.body[:200]))
    tc.assertIn("error", js, r.body)
    return js


# Requests that must be answered 400 and the connection closed.
H = b"POST /echo HTTP/1.1\r\nHost: t\r\n"
BAD_REQUESTS = {
    "cl_and_te": H + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te_and_cl": H + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
    "two_different_cl": H + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "cl_plus_sign": H + b"Content-Length: +5\r\n\r\nhello",
    "cl_two_numbers": H + b"Content-Length: 5 5\r\n\r\nhello",
    "cl_negative": H + b"Content-Length: -1\r\n\r\n",
    "cl_hex": H + b"Content-Length: 0x5\r\n\r\nhello",
    "obs_fold_te_line": H + b"X-A: a\r\n Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\nhello",
    "obs_fold_te_value": H + b"Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
    "te_space_before_colon": H + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    "te_chunked_not_final": H + b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
    "te_xchunked": H + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    "bad_chunk_size": H + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    "chunk_size_overflow": H + b"Transfer-Encoding: chunked\r\n\r\nfffffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
    "chunk_missing_crlf": H + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
    "bare_lf_in_value": b"GET /headers HTTP/1.1\r\nHost: t\r\nX-A: a\nb\r\n\r\n",
    "bare_cr_in_value": b"GET /headers HTTP/1.1\r\nHost: t\r\nX-A: a\rb\r\n\r\n",
    "nul_in_value": b"GET /headers HTTP/1.1\r\nHost: t\r\nX-A: a\x00b\r\n\r\n",
    "ctl_in_value": b"GET /headers HTTP/1.1\r\nHost: t\r\nX-A: a\x01b\r\n\r\n",
    "missing_host": b"GET /headers HTTP/1.1\r\nX-A: a\r\n\r\n",
    "two_hosts": b"GET /headers HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "space_in_header_name": b"GET /headers HTTP/1.1\r\nHost: t\r\nBad Name: x\r\n\r\n",
    "empty_header_name": b"GET /headers HTTP/1.1\r\nHost: t\r\n: x\r\n\r\n",
    "space_in_target": b"GET /head ers HTTP/1.1\r\nHost: t\r\n\r\n",
    "garbage": b"HELLO THERE\r\n\r\n",
}


class Http1Test(unittest.TestCase):
    def setUp(self):
        VEER.assert_alive()  # one shared veer: say so once it died instead of N "connection refused"

    def conn(self, timeout=5):
        return RawConn(VEER.port, timeout=timeout * harness.SLOW)

    def test_keep_alive_two_requests_one_socket(self):
        with self.conn() as c:
            for i in range(2):
                c.send(req("GET", "/status/200"))
                r = c.read_response()
                self.assertEqual(r.status, 200, "request %d: %r" % (i, r))
                self.assertEqual(r.header("x-pod"), "blue-1")
                self.assertNotEqual((r.header("connection") or "").lower(), "close", r)
            self.assertFalse(c.is_closed(0.3), "keep-alive connection closed after 2 requests")

    def test_pipelining_in_order(self):
        with self.conn() as c:
            c.send(req("GET", "/status/201") + req("GET", "/status/202") + req("GET", "/status/203"))
            got = [r.status for r in c.read_responses(3)]
            self.assertEqual(got, [201, 202, 203])
            # with a body in the middle of the pipeline
            c.send(req("GET", "/status/201") + req("POST", "/echo", [("Content-Length", "5")], b"hello")
                   + req("GET", "/status/203"))
            rs = c.read_responses(3)
            self.assertEqual([r.status for r in rs], [201, 200, 203])
            self.assertEqual(rs[1].body, b"hello")

    def test_content_length_body_intact(self):
        body = os.urandom(200000)
        with self.conn() as c:
            c.send(req("POST", "/echo", [("Content-Length", str(len(body))),
                                         ("Content-Type", "application/octet-stream")], body))
            r = c.read_response()
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.header("x-echo-bytes"), str(len(body)))
            self.assertTrue(r.body == body, "echoed body differs (%d bytes back)" % len(r.body))

    def test_chunked_body_intact(self):
        parts = [os.urandom(n) for n in (1, 5, 4096, 65536, 100000, 7)]
        wire = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
        body = b"".join(parts)
        with self.conn() as c:
            c.send(req("POST", "/echo", [("Transfer-Encoding", "chunked")]))
            # dribble it in pieces that cut chunk headers in half
            for i in range(0, len(wire), 30011):
                c.send(wire[i:i + 30011])
            r = c.read_response()
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.header("x-echo-bytes"), str(len(body)))
            self.assertTrue(r.body == body, "echoed body differs (%d bytes back)" % len(r.body))
            # the connection is still usable after a chunked request
            c.send(req("GET", "/status/200"))
            self.assertEqual(c.read_response().status, 200)

    def test_chunked_extension_and_trailer(self):
        wire = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
        with self.conn() as c:
            c.send(req("POST", "/echo", [("Transfer-Encoding", "chunked")]) + wire)
            r = c.read_response()
            self.assertEqual((r.status, r.body), (200, b"hello world"), r)

    def test_expect_100_continue(self):
        body = b"hello world"
        with self.conn() as c:
            c.send(req("POST", "/echo", [("Content-Length", str(len(body))), ("Expect", "100-continue")]))
            r = c.read_response(timeout=3 * harness.SLOW, skip_1xx=False)
            self.assertEqual((r.version, r.status), ("HTTP/1.1", 100), r)
            c.send(body)
            r = c.read_response()
            self.assertEqual((r.status, r.body), (200, body), r)

    def test_malformed_requests_400_and_closed(self):
        for name, data in BAD_REQUESTS.items():
            with self.subTest(name):
                with self.conn() as c:
                    c.send(data)
                    try:
                        r = c.read_response()
                    except harness.ConnectionClosed as e:
                        self.fail("%s: connection closed without a 400 (%s)" % (name, e))
                    except socket.timeout:
                        self.fail("%s: no response" % name)
                    assert_local_json(self, r, 400)
                    self.assertTrue(c.is_closed(2.0), "%s: connection left open after 400" % name)

    def test_fold_and_values_split_across_reads(self):
        """The head arrives in two TCP segments at every cut around a header
        value: a fold is refused wherever the cut falls; a plain value split
        anywhere reaches the pod whole."""
        good = b"GET /headers HTTP/1.1\r\nHost: t\r\nX-Long: abc def\r\n\r\n"
        folds = {"fold_value": b"GET /headers HTTP/1.1\r\nHost: t\r\nX-A: a\r\n b\r\n\r\n",
                 "fold_empty": b"GET /headers HTTP/1.1\r\nHost: t\r\nX-A:\r\n b\r\n\r\n"}
        start = good.index(b"X-Long")
        for cut in range(start, len(good) - 2):
            with self.subTest(good_cut=cut), self.conn() as c:
                c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                c.send(good[:cut])
                time.sleep(0.02)
                c.send(good[cut:])
                r = c.read_response()
                self.assertEqual(r.status, 200, r)
                self.assertEqual(json.loads(r.body).get("x-long"), "abc def", r)
        for name, data in folds.items():
            start = data.index(b"X-A")
            for cut in range(start, len(data) - 2):
                with self.subTest(name, cut=cut), self.conn() as c:
                    c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    c.send(data[:cut])
                    time.sleep(0.02)
                    c.send(data[cut:])
                    assert_local_json(self, c.read_response(), 400)

    def test_header_limit_431(self):
        with self.conn() as c:  # just under the limit works
            c.send(req("GET", "/headers", [("X-Big", "a" * (MAX_HEADER - 500))]))
            self.assertEqual(c.read_response().status, 200)
        for name, headers in (("one big header", [("X-Big", "a" * (MAX_HEADER + 1000))]),
                              ("many headers", [("X-H%d" % i, "v" * 40) for i in range(150)])):
            with self.subTest(name):
                with self.conn() as c:
                    c.send(req("GET", "/headers", headers))
                    assert_local_json(self, c.read_response(), 431)

    def test_body_limit_413_content_length(self):
        with self.conn() as c:  # exactly the limit is allowed
            body = b"x" * MAX_BODY
            c.send(req("POST", "/sink", [("Content-Length", str(len(body)))], body))
            r = c.read_response(timeout=20)
            self.assertEqual(r.status, 200, r)
            self.assertEqual(json.loads(r.body)["bytes"], MAX_BODY)
        with self.conn() as c:
            n = 2 * MAX_BODY
            c.send(req("POST", "/sink", [("Content-Length", str(n))]))
            try:
                r = c.read_response(timeout=3)  # a known-too-big body is refused up front
            except socket.timeout:
                threading.Thread(target=self._send_quietly, args=(c, b"x" * n), daemon=True).start()
                r = c.read_response(timeout=10)
            assert_local_json(self, r, 413)

    def test_body_limit_413_chunked(self):
        with self.conn() as c:
            c.send(req("POST", "/sink", [("Transfer-Encoding", "chunked")]))
            chunk = b"%x\r\n%s\r\n" % (65536, b"y" * 65536)
            wire = chunk * (MAX_BODY // 65536 + 4) + b"0\r\n\r\n"
            threading.Thread(target=self._send_quietly, args=(c, wire), daemon=True).start()
            try:
                r = c.read_response(timeout=10)
            except harness.ConnectionClosed as e:
                self.fail("over-long chunked body: connection dropped without a 413 (%s)" % e)
            assert_local_json(self, r, 413)

    @staticmethod
    def _send_quietly(c, data):
        try:
            c.sock.sendall(data)
        except OSError:
            pass

    def _received_headers(self, extra):
        with self.conn() as c:
            c.send(req("GET", "/headers", extra))
            r = c.read_response()
            self.assertEqual(r.status, 200, r)
            return {k.lower(): v for k, v in json.loads(r.body).items()}

    def test_hop_by_hop_not_forwarded(self):
        got = self._received_headers([
            ("Connection", "keep-alive, X-Secret"), ("X-Secret", "1"), ("Keep-Alive", "timeout=5"),
            ("Proxy-Connection", "keep-alive"), ("TE", "trailers"), ("Upgrade", "foo/1"),
            ("X-Keep", "yes"), ("Proxy-Authorization", "Basic Zm9vOmJhcg==")])
        for name in ("x-secret", "keep-alive", "proxy-connection", "te", "upgrade"):
            self.assertNotIn(name, got, "hop-by-hop %s reached the pod: %r" % (name, got))
        conn = got.get("connection")
        if conn is not None:
            self.assertNotIn("x-secret", json.dumps(conn).lower(), got)
        self.assertEqual(got.get("x-keep"), "yes", got)
        self.assertEqual(got.get("proxy-authorization"), "Basic Zm9vOmJhcg==", got)

    def test_upgrade_is_ignored_and_the_connection_stays_http1(self):
        # curl --http2 on http:// asks for h2c by Upgrade; a WebSocket client
        # asks for websocket. veer answers over HTTP/1.1 (RFC 9110 7.8 lets a
        # server ignore Upgrade), forwards none of it, and the connection
        # goes on: a second request, a body, and a pipelined one after it.
        h2c = [("Connection", "Upgrade, HTTP2-Settings"), ("Upgrade", "h2c"),
               ("HTTP2-Settings", "AAMAAABkAAQCAAAAAAIAAAAA")]
        ws = [("Connection", "Upgrade"), ("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13"),
              ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")]
        with self.conn() as c:
            c.send(req("GET", "/headers", h2c))
            r = c.read_response()
            self.assertEqual(r.status, 200, r)
            got = {k.lower(): v for k, v in json.loads(r.body).items()}
            for name in ("upgrade", "http2-settings", "connection"):
                self.assertNotIn(name, got, got)
            c.send(req("POST", "/echo", ws + [("Content-Length", "5")], b"hello") + req("GET", "/status/204", h2c))
            rs = c.read_responses(2)
            self.assertEqual([(x.status, x.body) for x in rs], [(200, b"hello"), (204, b"")])
            c.send(req("GET", "/status/200"))
            self.assertEqual(c.read_response().status, 200)
        # curl itself: the h2c upgrade offer is declined, the answer comes over HTTP/1.1
        if shutil.which("curl"):
            out = subprocess.run(["curl", "-s", "--http2", "-o", "/dev/null", "-w", "%{http_code} %{http_version}",
                                  "http://127.0.0.1:%d/status/200" % VEER.port],
                                 capture_output=True, text=True, timeout=10)
            self.assertEqual(out.stdout, "200 1.1", out)

    def test_connect_is_refused(self):
        with self.conn() as c:
            c.send(b"CONNECT pod.example:443 HTTP/1.1\r\nHost: pod.example:443\r\n\r\n")
            r = c.read_response()
            self.assertIn(r.status, (400, 405), r)
            self.assertTrue(c.is_closed(2.0))

    def test_forwarded_headers_and_request_id(self):
        got = self._received_headers([])
        self.assertEqual(got.get("x-forwarded-for"), "127.0.0.1", got)
        self.assertEqual(got.get("x-forwarded-proto"), "http", got)
        rid = got.get("x-request-id")
        self.assertIsInstance(rid, str, got)
        self.assertRegex(rid, r"^[0-9a-f]{32}$")
        other = self._received_headers([])["x-request-id"]
        self.assertNotEqual(rid, other, "x-request-id must be unique per request")
        got = self._received_headers([("X-Request-Id", "my-req-123")])
        self.assertEqual(got.get("x-request-id"), "my-req-123", got)

    def test_bad_request_does_not_disturb_other_connection(self):
        with self.conn() as good:
            good.send(req("GET", "/status/200"))
            self.assertEqual(good.read_response().status, 200)
            good.send(req("GET", "/slow?ms=500"))  # in flight while the other connection misbehaves
            for data in (b"GARBAGE\r\n\r\n", BAD_REQUESTS["cl_and_te"], BAD_REQUESTS["nul_in_value"]):
                with self.conn() as bad:
                    bad.send(data)
                    self.assertEqual(bad.read_response().status, 400)
            r = good.read_response()
            self.assertEqual(r.status, 200, r)
            good.send(req("GET", "/status/200"))
            self.assertEqual(good.read_response().status, 200)

    def test_local_replies_are_json(self):
        with self.conn() as c:
            c.send(req("GET", "/no/such/route"))
            assert_local_json(self, c.read_response(), 404)
        with self.conn() as c:
            c.send(req("GET", "/dead/x"))
            r = c.read_response(timeout=5 * harness.SLOW)
            self.assertIn(r.status, (502, 503), r)
            assert_local_json(self, r, r.status)
        with self.conn() as c:
            c.send(req("GET", "/slow?ms=3000"))
            r = c.read_response(timeout=5 * harness.SLOW)
            assert_local_json(self, r, 504)

    def test_client_connection_close(self):
        with self.conn() as c:
            c.send(req("GET", "/status/200", [("Connection", "close")]))
            r = c.read_response()
            self.assertEqual(r.status, 200)
            self.assertEqual((r.header("connection") or "").lower(), "close", r)
            self.assertTrue(c.is_closed(2.0), "connection open after Connection: close")

    def test_http10_request(self):
        with self.conn() as c:
            c.send(b"GET /status/200 HTTP/1.0\r\n\r\n")
            r = c.read_response()
            self.assertEqual(r.status, 200, r)
            self.assertTrue(c.is_closed(2.0), "HTTP/1.0 without keep-alive left open")

    def test_chunked_response_passthrough(self):
        n = 300000
        with self.conn() as c:
            c.send(req("GET", "/bytes?n=%d" % n))
            r = c.read_response(timeout=10)
            self.assertEqual(r.status, 200)
            expect = (bytes(range(97, 123)) * (n // 26 + 1))[:n]
            self.assertEqual(len(r.body), n)
            self.assertTrue(r.body == expect, "downloaded bytes differ")
            c.send(req("GET", "/status/200"))
            self.assertEqual(c.read_response().status, 200)

    def test_head_then_next_request(self):
        with self.conn() as c:
            c.send(req("HEAD", "/bytes?n=1000"))
            r = c.read_response(method="HEAD")
            self.assertLess(r.status, 500, r)
            c.send(req("GET", "/status/202"))
            r = c.read_response()
            self.assertEqual(r.status, 202, "response after HEAD misframed: %r" % r)


if __name__ == "__main__":
    harness.main()
