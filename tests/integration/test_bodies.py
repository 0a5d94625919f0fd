"""Large bodies stream through veer: a 100 MB upload (chunked and with
Content-Length) and a 100 MB download arrive intact while veer's resident
memory stays flat, and a slow reader holds veer back (backpressure) instead of
making it buffer the whole response."""

import http.client
import json
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import RssSampler, Veer, base_config  # noqa: E402

MB = 1 << 20
SIZE = 100 * MB
# ASan keeps freed memory in quarantine: cap it so growth measures buffering.
GROWTH_LIMIT_KB = (64 if harness.ASAN else 32) * 1024


def setUpModule():
    global POD, VEER
    harness.require_binaries()
    POD = harness.MockPod("blue-1")
    cfg = base_config({"blue": [POD.addr]},
                      [{"name": "all", "match": {"path_prefix": "/"},
                        "split": [{"cluster": "blue", "weight": 100}], "timeout": "120s"}],
                      limits={"max_body_bytes": 1 << 30})
    env = None
    if harness.ASAN:
        opts = os.environ.get("ASAN_OPTIONS", "")
        env = {"ASAN_OPTIONS": (opts + ":" if opts else "") + "quarantine_size_mb=16:thread_local_quarantine_size_kb=256"}
    VEER = Veer(cfg, env=env)


def warm_up(upload):
    """Let veer allocate its steady-state buffers before the baseline is taken."""
    for _ in range(3):
        if upload:
            st, _, body = VEER.request("POST", "/sink", os.urandom(4 * MB), timeout=10 * harness.SLOW)
            assert st == 200, "4 MB upload warm-up: %s %r" % (st, body[:200])
        else:
            st, _, body = VEER.request("GET", "/bytes?n=%d" % (4 * MB), timeout=10 * harness.SLOW)
            assert st == 200 and len(body) == 4 * MB, "4 MB download warm-up: %s, %d bytes" % (st, len(body))
    time.sleep(0.2)
    return VEER.rss_kb()


BLOCK = os.urandom(MB)
BLOCK_SUM = sum(BLOCK)


def body_blocks(n_blocks):
    for _ in range(n_blocks):
        yield BLOCK


class BodiesTest(unittest.TestCase):
    def upload(self, chunked):
        base = warm_up(upload=True)
        conn = http.client.HTTPConnection("127.0.0.1", VEER.port, timeout=60 * harness.SLOW)
        headers = {"Content-Type": "application/octet-stream"}
        if chunked:
            headers["Transfer-Encoding"] = "chunked"
        else:
            headers["Content-Length"] = str(SIZE)
        t0 = time.time()
        with RssSampler(VEER) as rss:
            conn.request("POST", "/sink", body=body_blocks(SIZE // MB), headers=headers, encode_chunked=chunked)
            r = conn.getresponse()
            data = r.read()
        conn.close()
        self.assertEqual(r.status, 200, data[:300])
        js = json.loads(data)
        self.assertEqual(js["bytes"], SIZE)
        self.assertEqual(js["sum"], (BLOCK_SUM * (SIZE // MB)) % (1 << 32))
        growth = rss.peak() - base
        self.assertLess(growth, GROWTH_LIMIT_KB, "veer RSS grew %d kB during a %s upload (%.1fs)"
                        % (growth, "chunked" if chunked else "CL", time.time() - t0))

    def test_upload_100mb_chunked(self):
        self.upload(chunked=True)

    def test_upload_100mb_content_length(self):
        self.upload(chunked=False)

    def test_download_100mb(self):
        base = warm_up(upload=False)
        pattern = bytes(range(97, 123)) * (MB // 26 + 2)
        conn = http.client.HTTPConnection("127.0.0.1", VEER.port, timeout=60 * harness.SLOW)
        got = 0
        with RssSampler(VEER) as rss:
            conn.request("GET", "/bytes?n=%d" % SIZE)
            r = conn.getresponse()
            self.assertEqual(r.status, 200)
            while True:
                data = r.read1(MB) if hasattr(r, "read1") else r.read(MB)
                if not data:
                    break
                s = got % 26
                if data != pattern[s:s + len(data)]:
                    self.fail("downloaded bytes differ near offset %d" % got)
                got += len(data)
        conn.close()
        self.assertEqual(got, SIZE)
        growth = rss.peak() - base
        self.assertLess(growth, GROWTH_LIMIT_KB, "veer RSS grew %d kB during a 100 MB download" % growth)

    def test_slow_reader_backpressure(self):
        base = warm_up(upload=False)
        c = harness.RawConn(VEER.port, timeout=10, rcvbuf=64 * 1024)
        c.send(b"GET /bytes?n=%d HTTP/1.1\r\nHost: t\r\n\r\n" % SIZE)
        got = 0
        with RssSampler(VEER) as rss:
            t0 = time.time()
            while time.time() - t0 < 3.0:  # about 1 MB/s
                data = c.sock.recv(100 * 1024)
                self.assertTrue(data, "veer closed the slow download")
                got += len(data)
                time.sleep(0.1)
        growth = rss.peak() - base
        c.close()
        self.assertGreater(got, 1 * MB, "slow reader got only %d bytes in 3 s" % got)
        self.assertLess(growth, GROWTH_LIMIT_KB,
                        "veer RSS grew %d kB while a client read a 100 MB response at 1 MB/s (no backpressure?)"
                        % growth)
        # veer is fine afterwards
        st, _, _ = VEER.request("GET", "/status/200")
        self.assertEqual(st, 200)


if __name__ == "__main__":
    harness.main()
