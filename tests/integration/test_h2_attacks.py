"""HTTP/2 attack mitigations (limits.http2): Rapid Reset (CVE-2023-44487),
CONTINUATION floods (CVE-2024-27316 family) by frame count and by bytes,
SETTINGS / PING / empty-frame / PRIORITY floods, a header block that never
ends (slowloris), an idle connection, a stalled reader, oversized heads and
bodies. Each attack must end with GOAWAY ENHANCE_YOUR_CALM (or the answer the
contract names) on the attacker's connection while a bystander connection
with a request in flight is not disturbed."""

import os
import socket
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_h2 as h2t  # noqa: E402  (re-executes under the system python when h2 is missing)
import harness  # noqa: E402
import hpack  # noqa: E402
from harness import Veer, base_config  # noqa: E402
from test_h2 import (CONTINUATION, DATA, END_HEADERS, END_STREAM, ENHANCE_YOUR_CALM, HEADERS, PING,  # noqa: E402
                     PRIORITY, RST_STREAM, SETTINGS, H2Conn, RawH2, frame, h2_get, hpack_literal)

CANCEL = 0x8
HEADER_TIMEOUT_S = 1.0
IDLE_TIMEOUT_S = 2.0
MAX_HEADER_LIST = 16384


def setUpModule():
    global POD, VEER
    harness.require_binaries()
    POD = harness.MockPod("blue-1")
    cfg = base_config({"blue": [POD.addr]},
                      h2t.pod_routes("blue") + [{"name": "slow", "match": {"path_prefix": "/slow"},
                                                 "split": [{"cluster": "blue", "weight": 100}]}],
                      workers=1,
                      limits={"max_body_bytes": 1 << 20, "header_timeout": "%dms" % (HEADER_TIMEOUT_S * 1000),
                              "idle_timeout": "%dms" % (IDLE_TIMEOUT_S * 1000),
                              "http2": {"max_header_list_size": MAX_HEADER_LIST, "max_continuations": 16,
                                        "reset_rate": 100, "reset_burst": 200, "max_settings_per_second": 50,
                                        "max_pings_per_second": 50, "max_empty_frames_per_second": 100,
                                        "max_priority_per_second": 100}})
    VEER = Veer(cfg, env=h2t.veer_env())


class Bystander:
    """A well-behaved client with a request in flight during an attack."""

    def __init__(self):
        self.c = H2Conn(VEER.port, timeout=15 * harness.SLOW)
        self.sid = self.c.request("GET", "/slow?ms=%d" % int(600 * harness.SLOW))

    def check(self, test):
        st = self.c.response(self.sid)
        test.assertEqual(st["status"], 200, "the bystander's stream: %r" % st)
        test.assertEqual(self.c.goaways, [])
        again = self.c.request("GET", "/status/200")
        test.assertEqual(self.c.response(again)["status"], 200)
        self.c.close()


class AttackTest(unittest.TestCase):
    def expect_calm_goaway(self, raw, what, timeout=10):
        closed = raw.wait_closed(timeout * harness.SLOW)
        self.assertTrue(closed, "%s: veer kept the connection open" % what)
        self.assertIn(ENHANCE_YOUR_CALM, [code for code, _ in raw.goaways()],
                      "%s: no GOAWAY ENHANCE_YOUR_CALM; frames %r" % (what, [f[:3] for f in raw.frames]))

    def attack(self, what, payload, chunks=1):
        """Send payload (in chunks sends) on a fresh raw connection while a
        bystander has a request in flight; expect GOAWAY ENHANCE_YOUR_CALM."""
        by = Bystander()
        raw = RawH2(VEER.port)
        try:
            step = (len(payload) + chunks - 1) // chunks
            for i in range(0, len(payload), step):
                if not raw.try_send(payload[i:i + step]):
                    break
            self.expect_calm_goaway(raw, what)
        finally:
            raw.close()
        by.check(self)
        self.assertEqual(h2_get(VEER.port, "/status/200")[0], 200)

    def test_rapid_reset(self):
        raw = RawH2(VEER.port)
        by = Bystander()
        try:
            sent = 0
            for batch in range(10):
                data = b""
                for i in range(100):
                    sid = 1 + 2 * (batch * 100 + i)
                    data += frame(HEADERS, END_STREAM | END_HEADERS, sid, raw.headers_block("GET", "/slow?ms=500"))
                    data += frame(RST_STREAM, 0, sid, CANCEL.to_bytes(4, "big"))
                if not raw.try_send(data):
                    break
                sent += 100
            self.expect_calm_goaway(raw, "rapid reset")
            self.assertLessEqual(max(s for _, s in raw.goaways()), 2 * sent)
        finally:
            raw.close()
        by.check(self)

    def test_resets_within_budget_are_served(self):
        with H2Conn(VEER.port) as c:
            for _ in range(40):
                sid = c.request("GET", "/slow?ms=300")
                c.conn.reset_stream(sid, CANCEL)
                c.flush()
                time.sleep(0.005)
            ok = c.request("GET", "/status/200")
            self.assertEqual(c.response(ok)["status"], 200)
            self.assertEqual(c.goaways, [])

    def continuation_block(self, raw, frames, field_bytes):
        first = raw.headers_block("GET", "/status/200")
        data = frame(HEADERS, END_STREAM, 1, first)
        for i in range(frames):
            data += frame(CONTINUATION, 0, 1, hpack_literal("x-c%d" % i, "v" * field_bytes))
        return data

    def test_continuation_flood_by_count(self):
        raw = RawH2(VEER.port)
        self.attack_with(raw, self.continuation_block(raw, 200, 1), "CONTINUATION flood (count)")

    def test_continuation_flood_by_bytes(self):
        # 3 frames of 16000 bytes: far fewer frames than max_continuations,
        # but more than max_header_list_size + slack of HPACK bytes.
        raw = RawH2(VEER.port)
        self.attack_with(raw, self.continuation_block(raw, 3, 16000), "CONTINUATION flood (bytes)")

    def attack_with(self, raw, payload, what):
        by = Bystander()
        try:
            raw.try_send(payload)
            self.expect_calm_goaway(raw, what)
        finally:
            raw.close()
        by.check(self)

    def test_settings_flood(self):
        self.attack("SETTINGS flood", frame(SETTINGS, 0, 0, b"\x00\x03\x00\x00\x00\x64") * 200)

    def test_ping_flood(self):
        self.attack("PING flood", b"".join(frame(PING, 0, 0, i.to_bytes(8, "big")) for i in range(200)))

    def test_empty_data_flood(self):
        raw = RawH2(VEER.port)
        head = frame(HEADERS, END_HEADERS, 1, raw.headers_block("POST", "/sink"))
        self.attack_with(raw, head + frame(DATA, 0, 1) * 300, "empty DATA flood")

    def test_priority_flood(self):
        self.attack("PRIORITY flood", b"".join(frame(PRIORITY, 0, 2 * i + 1, b"\x00\x00\x00\x00\x10")
                                               for i in range(300)))

    def test_header_block_that_never_ends(self):
        by = Bystander()
        raw = RawH2(VEER.port)
        try:
            raw.send(frame(HEADERS, END_STREAM, 1, raw.headers_block("GET", "/status/200")))
            t0 = time.time()
            self.assertTrue(raw.wait_closed((HEADER_TIMEOUT_S + 3) * harness.SLOW), "an unfinished head was kept")
            self.assertGreaterEqual(time.time() - t0, HEADER_TIMEOUT_S * 0.8)
            self.assertIn(ENHANCE_YOUR_CALM, [code for code, _ in raw.goaways()])
        finally:
            raw.close()
        by.check(self)

    def test_idle_connection_gets_goaway(self):
        with H2Conn(VEER.port) as c:
            self.assertEqual(c.response(c.request("GET", "/status/200"))["status"], 200)
            t0 = time.time()
            c.wait(lambda: c.goaways, (IDLE_TIMEOUT_S + 3) * harness.SLOW, "the idle GOAWAY")
            self.assertGreaterEqual(time.time() - t0, IDLE_TIMEOUT_S * 0.8)
            self.assertEqual(c.goaways[0][0], 0)  # NO_ERROR
            deadline = time.time() + 5 * harness.SLOW
            while not c.closed and time.time() < deadline:
                c.pump(0.5)
            self.assertTrue(c.closed)

    def test_stalled_reader_is_closed(self):
        # Asks for 20 MB with a 64 KiB window, then neither reads nor sends a
        # frame: veer gives up after one idle_timeout without progress.
        s = socket.create_connection(("127.0.0.1", VEER.port), timeout=10)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        block = hpack.Encoder().encode([(":method", "GET"), (":path", "/bytes?n=%d" % (20 << 20)),
                                        (":scheme", "http"), (":authority", "h2.test")])
        s.sendall(h2t.PREFACE + frame(SETTINGS, 0, 0) + frame(HEADERS, END_STREAM | END_HEADERS, 1, block))
        time.sleep(2 * IDLE_TIMEOUT_S + 0.5)  # two idle ticks: one with progress, one without
        s.settimeout(5 * harness.SLOW)
        got, closed = 0, False
        try:
            while True:
                d = s.recv(1 << 20)
                if not d:
                    closed = True
                    break
                got += len(d)
        except ConnectionResetError:
            closed = True
        except socket.timeout:
            pass
        s.close()
        self.assertTrue(closed, "a client that stopped reading was kept (%d bytes read)" % got)
        self.assertLess(got, 20 << 20)

    def test_oversized_head_is_431_and_the_connection_lives(self):
        with H2Conn(VEER.port) as c:
            big = [("x-big-%d" % i, "v" * 1000) for i in range(MAX_HEADER_LIST // 1000 + 2)]
            sid = c.request("GET", "/headers", headers=big)
            st = c.response(sid)
            self.assertEqual(st["status"], 431, st)
            ok = c.request("GET", "/headers", headers=[("x-small", "1")])
            self.assertEqual(c.response(ok)["status"], 200)
            self.assertEqual(c.goaways, [])

    def test_body_over_max_body_bytes(self):
        with H2Conn(VEER.port) as c:
            # declared: answered at once
            sid = c.request("POST", "/sink", headers=[("content-length", str(2 << 20))], end=False)
            c.wait(lambda: c.streams[sid]["status"] is not None, what="413")
            self.assertEqual(c.streams[sid]["status"], 413)
            # streamed without a length: cut when it passes the limit
            sid = c.request("POST", "/sink", end=False)
            c.send_body(sid, (b"z" * 65536 for _ in range(40)))
            st = c.response(sid)
            self.assertTrue(st["status"] == 413 or st["reset"] is not None, st)
            ok = c.request("GET", "/status/200")
            self.assertEqual(c.response(ok)["status"], 200)
            self.assertEqual(c.goaways, [])


if __name__ == "__main__":
    harness.main()
