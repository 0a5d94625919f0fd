"""TLS on both sides: HTTPS listeners (curl, openssl s_client, python ssl),
ALPN, protocol versions, mTLS listeners, certificate rotation on reload and a
reload refused for a bad key, plain bytes to a TLS port, handshake timeouts
and the rate-limited failure log; upstream TLS through HAProxy terminating
TLS in front of the mock pod (CA and hostname verification, SNI,
insecure_skip_verify, client certificates, keep-alive reuse, the connect
timeout covering the handshake, session resumption seen from both sides). Certificates are made with the openssl CLI
at module set-up."""

import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import MockPod, Veer, base_config, free_port  # noqa: E402

PKI = os.path.join(harness.TMP, "pki")
SERIAL_1 = 0x1001
SERIAL_2 = 0x2002
POD = None


def openssl(*args):
    subprocess.run(["openssl"] + list(args), check=True, capture_output=True, timeout=60)


def p(name):
    return os.path.join(PKI, name)


def make_ca(name):
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", p(name + ".key"), "-out", p(name + ".pem"), "-days", "3650", "-subj", "/CN=veer test " + name)


def make_cert(name, ca, serial, usage, days=365, san="IP:127.0.0.1,DNS:localhost"):
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", p(name + ".key"),
            "-out", p(name + ".csr"), "-subj", "/CN=" + name)
    ext = p(name + ".ext")
    with open(ext, "w") as f:
        f.write("basicConstraints=CA:FALSE\nextendedKeyUsage=%s\n" % usage)
        if san:
            f.write("subjectAltName=%s\n" % san)
    openssl("x509", "-req", "-in", p(name + ".csr"), "-CA", p(ca + ".pem"), "-CAkey", p(ca + ".key"),
            "-set_serial", str(serial), "-days", str(days), "-out", p(name + ".pem"), "-extfile", ext)
    with open(p(name + ".both.pem"), "w") as out:  # HAProxy wants certificate and key in one file
        for part in (name + ".pem", name + ".key"):
            with open(p(part)) as f:
                out.write(f.read())


def setUpModule():
    global POD
    harness.require_binaries()
    for tool in ("openssl", "curl", "haproxy"):
        if shutil.which(tool) is None:
            raise AssertionError("%s is needed by the TLS tests (apt-get install -y %s)" % (tool, tool))
    os.makedirs(PKI)
    make_ca("ca")
    make_ca("ca2")
    make_cert("server", "ca", SERIAL_1, "serverAuth")
    make_cert("server2", "ca", SERIAL_2, "serverAuth")
    make_cert("client", "ca", 0x3003, "clientAuth", san=None)
    make_cert("other_client", "ca2", 0x4004, "clientAuth", san=None)
    make_cert("other_server", "ca2", 0x5005, "serverAuth")
    make_cert("expired", "ca", 0x6006, "serverAuth", days=-1)
    POD = MockPod("blue-1")


def one_route(cluster="blue", **extra):
    r = {"name": "all", "match": {"path_prefix": "/"}, "split": [{"cluster": cluster, "weight": 100}]}
    r.update(extra)
    return [r]


def https_listener(name="https", cert="server", key=None, **tls):
    t = {"cert": p(cert + ".pem") if "/" not in cert else cert,
         "key": p((key or cert) + ".key") if "/" not in (key or cert) else key}
    t.update(tls)
    return {"name": name, "address": "127.0.0.1:%d" % free_port(), "tls": t}


def tls_port(veer, name="https"):
    for lst in veer.config["listeners"]:
        if lst["name"] == name:
            return int(lst["address"].rsplit(":", 1)[1])
    raise AssertionError("no listener " + name)


def client_ctx(cert=None, version=None, alpn=None):
    ctx = ssl.create_default_context(cafile=p("ca.pem"))
    if cert:
        ctx.load_cert_chain(p(cert + ".pem"), p(cert + ".key"))
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def https_request(port, method="GET", path="/status/200", body=None, ctx=None, timeout=10):
    """(status, headers, body, negotiated TLS version) on a fresh connection."""
    c = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=ctx or client_ctx())
    try:
        c.request(method, path, body=body)
        r = c.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data, c.sock.version()
    finally:
        c.close()


def peer_serial(port, ctx=None):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with (ctx or client_ctx()).wrap_socket(raw, server_hostname="localhost") as s:
            return int(s.getpeercert()["serialNumber"], 16)


def s_client(port, *args, timeout=10):
    r = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port, "-CAfile", p("ca.pem")] + list(args),
                       input=b"", capture_output=True, timeout=timeout)
    return r.returncode, r.stdout.decode("latin-1") + r.stderr.decode("latin-1")


def alpn_of(port, offer):
    _, out = s_client(port, "-alpn", offer)
    m = re.search(r"ALPN protocol: (\S+)", out)
    if m:
        return m.group(1)
    if "No ALPN negotiated" in out:
        return None
    raise AssertionError("s_client: no ALPN line:\n" + out[-2000:])


def handshake_lines(veer, side="downstream"):
    return [o for o in veer.json_log_lines() if o.get("msg") == "tls handshake failed" and o.get("side") == side]


def wait_handshake_line(veer, count, side="downstream"):
    return harness.wait_until(lambda: len(handshake_lines(veer, side)) >= count and handshake_lines(veer, side),
                              5 * harness.SLOW, what="%d '%s' handshake failure log lines" % (count, side))


def closed_by_peer(sock, timeout):
    """Read until the peer closes: (closed, bytes received). A TLS alert may
    come before the close."""
    data = b""
    deadline = time.time() + timeout
    while time.time() < deadline:
        sock.settimeout(max(0.01, deadline - time.time()))
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            break
        except ConnectionResetError:
            return True, data
        if not chunk:
            return True, data
        data += chunk
    return False, data


def plain_h2_supported(port):
    """Does veer serve HTTP/2 (h2c prior knowledge on its plain listener)?"""
    r = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_version} %{http_code}",
                        "-m", "5", "http://127.0.0.1:%d/status/200" % port], capture_output=True, timeout=15)
    return r.stdout.decode().strip() == "2 200"


class DownstreamTest(unittest.TestCase):
    """HTTPS listener, one veer for the read-only checks."""

    @classmethod
    def setUpClass(cls):
        cfg = base_config({"blue": [POD.addr]}, one_route(), workers=1)
        cfg["listeners"].append(https_listener())
        cfg["listeners"].append(https_listener("h1only", alpn=["http/1.1"]))
        cls.veer = Veer(cfg)
        cls.port = tls_port(cls.veer)

    @classmethod
    def tearDownClass(cls):
        cls.veer.stop()

    def test_curl_get_and_10mib_post_intact(self):
        r = subprocess.run(["curl", "-sS", "--cacert", p("ca.pem"), "https://localhost:%d/headers" % self.port],
                           capture_output=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        headers = json.loads(r.stdout)
        self.assertEqual(headers.get("x-forwarded-proto"), "https")
        body = os.urandom(10 * 1024 * 1024)
        src = os.path.join(harness.TMP, "post.bin")
        with open(src, "wb") as f:
            f.write(body)
        r = subprocess.run(["curl", "-sS", "--http1.1", "--cacert", p("ca.pem"), "--data-binary", "@" + src,
                            "-H", "content-type: application/octet-stream", "-D", "-", "-o",
                            os.path.join(harness.TMP, "echo.bin"), "https://127.0.0.1:%d/echo" % self.port],
                           capture_output=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        statuses = re.findall(rb"^HTTP/1\.1 (\d{3})", r.stdout, re.M)
        self.assertEqual(statuses[-1], b"200", r.stdout)  # after curl's 100-continue
        self.assertIn(b"x-pod: blue-1", r.stdout.lower())
        with open(os.path.join(harness.TMP, "echo.bin"), "rb") as f:
            got = f.read()
        self.assertEqual(len(got), len(body))
        self.assertEqual(hashlib.sha256(got).hexdigest(), hashlib.sha256(body).hexdigest())

    def test_large_download_intact(self):
        st, hd, data, _ = https_request(self.port, path="/bytes?n=3000000")
        self.assertEqual(st, 200)
        self.assertEqual(len(data), 3000000)

    def test_keep_alive_many_requests(self):
        c = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=10, context=client_ctx())
        try:
            for i in range(50):
                body = ("r%d" % i).encode() * (i + 1)
                st, _, data = harness.do_request(c, "POST", "/echo", body)
                self.assertEqual((st, data), (200, body))
        finally:
            c.close()

    def test_alpn_server_preference(self):
        h2 = plain_h2_supported(self.veer.port)
        want = "h2" if h2 else "http/1.1"
        self.assertEqual(alpn_of(self.port, "h2,http/1.1"), want)
        # The server's order decides, not the client's.
        self.assertEqual(alpn_of(self.port, "http/1.1,h2"), want)
        self.assertEqual(alpn_of(self.port, "http/1.1"), "http/1.1")
        self.assertEqual(alpn_of(tls_port(self.veer, "h1only"), "h2,http/1.1"), "http/1.1")
        # No protocol in common: no ALPN, the connection goes on as HTTP/1.1.
        self.assertIsNone(alpn_of(tls_port(self.veer, "h1only"), "h2"))
        st, _, _, _ = https_request(tls_port(self.veer, "h1only"), ctx=client_ctx(alpn=["h2"]))
        self.assertEqual(st, 200)
        if h2:
            r = subprocess.run(["curl", "-sS", "--http2", "--cacert", p("ca.pem"), "-o", "/dev/null", "-w",
                                "%{http_version} %{http_code}", "https://localhost:%d/status/200" % self.port],
                               capture_output=True, timeout=30)
            self.assertEqual(r.stdout.decode(), "2 200", r.stderr)

    def test_protocol_versions(self):
        for version, name in ((ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")):
            st, _, _, got = https_request(self.port, ctx=client_ctx(version=version))
            self.assertEqual((st, got), (200, name))
        before = len(handshake_lines(self.veer))
        # The client is allowed TLS 1.1 (security level 0), veer refuses it.
        rc, out = s_client(self.port, "-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0")
        self.assertNotEqual(rc, 0, out[-1500:])
        self.assertNotIn("Protocol  : TLSv1.1\n    Cipher    : ECDHE", out)
        line = wait_handshake_line(self.veer, before + 1)[-1]
        self.assertEqual(line["kind"], "protocol")
        self.assertIn("unsupported protocol", line["reason"])
        rc, out = s_client(self.port, "-tls1_2")
        self.assertEqual(rc, 0, out[-1500:])
        self.assertIn("TLSv1.2", out)

    def test_plain_http_to_tls_port_closes_only_that_connection(self):
        keep = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=10, context=client_ctx())
        try:
            self.assertEqual(harness.do_request(keep, "GET", "/status/200")[0], 200)
            before = handshake_lines(self.veer)
            base = before[-1]["failures"] if before else 0
            with harness.RawConn(self.port) as rc:
                rc.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                local = "127.0.0.1:%d" % rc.sock.getsockname()[1]
                closed, data = closed_by_peer(rc.sock, 3.0 * harness.SLOW)
            self.assertTrue(closed, "veer kept a connection that sent plain HTTP to a TLS port")
            self.assertNotIn(b"HTTP/", data)
            line = wait_handshake_line(self.veer, len(before) + 1)[-1]
            self.assertEqual(line["peer"], local)
            self.assertEqual(line["listener"], "https")
            self.assertEqual(line["reason"], "http request")
            self.assertEqual(line["failures"], base + 1)
            # the established connection is untouched
            self.assertEqual(harness.do_request(keep, "GET", "/status/200")[0], 200)
        finally:
            keep.close()
        self.veer.assert_alive()


class HandshakeFailureTest(unittest.TestCase):
    def test_timeout_and_rate_limited_log(self):
        cfg = base_config({"blue": [POD.addr]}, one_route(), workers=1, limits={"header_timeout": "1s"})
        cfg["listeners"].append(https_listener())
        veer = Veer(cfg)
        port = tls_port(veer)
        # A client that connects and says nothing is cut at header_timeout.
        t0 = time.time()
        with harness.RawConn(port, timeout=5 * harness.SLOW) as rc:
            self.assertEqual(closed_by_peer(rc.sock, 4.0 * harness.SLOW), (True, b""))
        self.assertGreater(time.time() - t0, 0.8)
        line = wait_handshake_line(veer, 1)[-1]
        self.assertEqual((line["kind"], line["failures"]), ("timeout", 1))
        # A burst of garbage: every connection is counted, at most 10 lines a second are written.
        time.sleep(1.1)
        burst = 40
        t0 = time.time()
        for _ in range(burst):
            with harness.RawConn(port) as rc:
                rc.send(b"\x00" * 64)
                self.assertTrue(closed_by_peer(rc.sock, 3.0 * harness.SLOW)[0])
        elapsed = time.time() - t0
        logged = len(handshake_lines(veer)) - 1
        self.assertLessEqual(logged, 10 * (int(elapsed) + 2), "rate limit not applied: %d lines" % logged)
        if elapsed < 1.0:
            self.assertLessEqual(logged, 20)
        time.sleep(1.1)
        with harness.RawConn(port) as rc:
            rc.send(b"\x16\x03\x01\x00\x05hello")
            self.assertTrue(closed_by_peer(rc.sock, 3.0 * harness.SLOW)[0])
        last = harness.wait_until(lambda: [l for l in handshake_lines(veer) if l["failures"] == burst + 2],
                                  5 * harness.SLOW, what="the line after the burst")[-1]
        lines = handshake_lines(veer)
        # every failure is either logged or counted as suppressed in the next line
        self.assertEqual(len(lines) + sum(l["suppressed"] for l in lines), burst + 2)
        self.assertEqual(last["kind"], "protocol")
        veer.assert_alive()
        veer.stop()


class MutualTlsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cfg = base_config({"blue": [POD.addr]}, one_route(), workers=1)
        cfg["listeners"].append(https_listener(client_ca=p("ca.pem")))
        cls.veer = Veer(cfg)
        cls.port = tls_port(cls.veer)

    @classmethod
    def tearDownClass(cls):
        cls.veer.stop()

    def refused(self, cert):
        try:
            st, _, _, _ = https_request(self.port, ctx=client_ctx(cert=cert), timeout=5)
        except (ssl.SSLError, ConnectionError, http.client.HTTPException, OSError) as e:
            return e
        self.fail("mTLS listener answered %s to a client with cert %r" % (st, cert))

    def test_no_client_cert_fails(self):
        before = len(handshake_lines(self.veer))
        self.refused(None)
        line = wait_handshake_line(self.veer, before + 1)[-1]
        self.assertEqual(line["kind"], "certificate")
        self.assertIn("certificate", line["reason"])

    def test_client_cert_from_other_ca_fails(self):
        before = len(handshake_lines(self.veer))
        self.refused("other_client")
        line = wait_handshake_line(self.veer, before + 1)[-1]
        self.assertEqual(line["kind"], "certificate")
        self.assertIn("issuer", line["reason"])

    def test_good_client_cert(self):
        st, _, body, _ = https_request(self.port, "POST", "/echo", b"mtls", ctx=client_ctx(cert="client"))
        self.assertEqual((st, body), (200, b"mtls"))
        r = subprocess.run(["curl", "-sS", "--cacert", p("ca.pem"), "--cert", p("client.pem"), "--key",
                            p("client.key"), "-o", "/dev/null", "-w", "%{http_code}",
                            "https://localhost:%d/status/200" % self.port], capture_output=True, timeout=30)
        self.assertEqual(r.stdout, b"200", r.stderr)


class ReloadTest(unittest.TestCase):
    def test_rotation_and_refused_reload(self):
        rot = os.path.join(harness.TMP, "rot")
        os.makedirs(rot, exist_ok=True)
        cert, key = os.path.join(rot, "tls.crt"), os.path.join(rot, "tls.key")
        shutil.copy(p("server.pem"), cert)
        shutil.copy(p("server.key"), key)
        cfg = base_config({"blue": [POD.addr]}, one_route(), workers=2)
        cfg["listeners"].append(https_listener(cert=cert, key=key))
        veer = Veer(cfg)
        port = tls_port(veer)
        self.assertEqual(peer_serial(port), SERIAL_1)
        old = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=client_ctx())
        self.assertEqual(harness.do_request(old, "GET", "/status/200")[0], 200)

        # rotate the files in place, then reload: new connections get the new certificate
        shutil.copy(p("server2.pem"), cert)
        shutil.copy(p("server2.key"), key)
        st, js = veer.admin("POST", "/v1/reload")
        self.assertEqual(st, 200, js)
        for _ in range(4):  # both workers
            self.assertEqual(peer_serial(port), SERIAL_2)
        # a connection made before the reload goes on with its own context
        self.assertEqual(harness.do_request(old, "GET", "/status/200")[0], 200)
        old.close()

        # a key that cannot be read: the reload fails whole, naming the file
        bad = dict(veer.config)
        bad["listeners"] = [dict(l) for l in veer.config["listeners"]]
        missing = os.path.join(rot, "missing.key")
        bad["listeners"][1] = dict(bad["listeners"][1], tls=dict(bad["listeners"][1]["tls"], key=missing))
        good_config = veer.config
        veer.write_config(bad)
        st, js = veer.admin("POST", "/v1/reload")
        self.assertEqual(st, 400, js)
        self.assertTrue(any(missing in e for e in js["errors"]), js)
        self.assertTrue(any("listeners[1].tls.key" in e for e in js["errors"]), js)
        self.assertEqual(peer_serial(port), SERIAL_2)

        # a key of another certificate: refused too
        veer.write_config(good_config)
        shutil.copy(p("server.key"), key)
        st, js = veer.admin("POST", "/v1/reload")
        self.assertEqual(st, 400, js)
        self.assertTrue(any("does not match" in e and key in e for e in js["errors"]), js)
        self.assertEqual(peer_serial(port), SERIAL_2)

        # SIGHUP with the same problem: logged, veer keeps serving the old certificate
        veer.signal(signal.SIGHUP)
        harness.wait_until(lambda: any("reload failed" in o.get("msg", "") and key in o.get("msg", "")
                                       for o in veer.json_log_lines()), 5 * harness.SLOW, what="reload failure log")
        self.assertEqual(peer_serial(port), SERIAL_2)
        st, _, _, _ = https_request(port)
        self.assertEqual(st, 200)

        # veer check names the file as well
        r = subprocess.run([harness.VEER_BIN, "check", "-c", veer.config_path], capture_output=True, timeout=30)
        self.assertEqual(r.returncode, 1)
        self.assertIn(key.encode(), r.stderr)
        veer.assert_alive()
        veer.stop()


class HAProxy:
    """HAProxy terminating TLS in front of a plain backend."""

    def __init__(self, backend, cert="server", verify_ca=None, bind_extra="", frontend_lines=()):
        self.port = free_port()
        self.addr = "127.0.0.1:%d" % self.port
        bind = "bind %s ssl crt %s alpn http/1.1" % (self.addr, p(cert + ".both.pem"))
        if verify_ca:
            bind += " ca-file %s verify required" % p(verify_ca + ".pem")
        if bind_extra:
            bind += " " + bind_extra
        path = os.path.join(harness.TMP, "haproxy-%d.cfg" % self.port)
        with open(path, "w") as f:
            f.write("global\n  maxconn 256\n"
                    "defaults\n  mode http\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n"
                    "frontend fe\n  %s\n%s  default_backend be\n"
                    "backend be\n  server pod %s\n"
                    % (bind, "".join("  %s\n" % line for line in frontend_lines), backend))
        self.proc, self.out, self.err = harness.spawn(["haproxy", "-db", "-f", path], "haproxy-%d" % self.port)
        harness.wait_until(self._listening, 10 * harness.SLOW, what="haproxy on %s" % self.addr)

    def _listening(self):
        if self.proc.poll() is not None:
            raise AssertionError("haproxy exited: %s" % harness.tail(self.err))
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def connections(self):
        out = subprocess.run(["ss", "-tanH", "( sport = :%d )" % self.port], capture_output=True, text=True,
                             timeout=10).stdout
        return {line.split()[4] for line in out.splitlines() if line.split() and line.split()[0] != "LISTEN"}


class UpstreamTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.hp = HAProxy(POD.addr)
        cls.hp_mtls = HAProxy(POD.addr, verify_ca="ca")
        cls.hp_other = HAProxy(POD.addr, cert="other_server")
        cls.hp_expired = HAProxy(POD.addr, cert="expired")
        cls.stall = socket.socket()
        cls.stall.bind(("127.0.0.1", 0))
        cls.stall.listen(16)  # completes TCP handshakes, never answers a ClientHello
        ca, ca2 = p("ca.pem"), p("ca2.pem")
        clusters = {
            "good": {"endpoints": [cls.hp.addr], "tls": {"ca": ca}},
            "byname": {"endpoints": [cls.hp.addr], "tls": {"ca": ca, "sni": "localhost"}},
            "wrongca": {"endpoints": [cls.hp.addr], "tls": {"ca": ca2}},
            "badsni": {"endpoints": [cls.hp.addr], "tls": {"ca": ca, "sni": "wrong.example"}},
            "insecure": {"endpoints": [cls.hp.addr], "tls": {"ca": ca2, "sni": "wrong.example",
                                                           "insecure_skip_verify": True}},
            "other": {"endpoints": [cls.hp_other.addr], "tls": {"ca": ca}},
            "expired": {"endpoints": [cls.hp_expired.addr], "tls": {"ca": ca}},
            "mtls": {"endpoints": [cls.hp_mtls.addr],
                     "tls": {"ca": ca, "cert": p("client.pem"), "key": p("client.key")}},
            "mtls_nocert": {"endpoints": [cls.hp_mtls.addr], "tls": {"ca": ca}},
            "mtls_othercert": {"endpoints": [cls.hp_mtls.addr],
                               "tls": {"ca": ca, "cert": p("other_client.pem"), "key": p("other_client.key")}},
            "stall": {"endpoints": ["127.0.0.1:%d" % cls.stall.getsockname()[1]], "connect_timeout": "300ms",
                      "tls": {"insecure_skip_verify": True}},
        }
        route = {"name": "all", "match": {"path_prefix": "/"}, "split": [{"cluster": "good", "weight": 100}],
                 "overrides": [{"header": "x-cluster", "equals": n, "cluster": n} for n in clusters if n != "good"]}
        cls.veer = Veer(base_config(clusters, [route], workers=1))

    @classmethod
    def tearDownClass(cls):
        cls.veer.stop()
        cls.stall.close()

    def get(self, cluster, path="/status/200", method="GET", body=None):
        h = {"x-cluster": cluster} if cluster != "good" else {}
        return self.veer.request(method, path, body=body, headers=h, timeout=15)

    def assert_fails(self, cluster, kind, reason):
        before = len(handshake_lines(self.veer, "upstream"))
        st, hd, body = self.get(cluster)
        self.assertIn(st, (502, 503), body)
        self.assertEqual(json.loads(body)["cluster"], cluster)
        if kind is None:
            return
        line = wait_handshake_line(self.veer, before + 1, "upstream")[-1]
        self.assertEqual((line["cluster"], line["kind"]), (cluster, kind), line)
        self.assertIn(reason, line["reason"])

    def test_good_ca_body_intact_and_reuse(self):
        body = os.urandom(1024 * 1024 + 17)
        st, hd, data = self.get("good", "/echo", "POST", body)
        self.assertEqual(st, 200)
        self.assertEqual(hd.get("x-pod"), "blue-1")
        self.assertEqual(hashlib.sha256(data).hexdigest(), hashlib.sha256(body).hexdigest())
        st, _, data = self.get("good", "/bytes?n=2000000")
        self.assertEqual((st, len(data)), (200, 2000000))
        before = self.hp.connections()
        c = self.veer.connection()
        for _ in range(30):
            self.assertEqual(harness.do_request(c, "GET", "/status/200")[0], 200)
        c.close()
        new = self.hp.connections() - before
        self.assertLessEqual(len(new), 2, "30 sequential requests opened %d TLS upstream connections" % len(new))

    def test_sni_name_verified(self):
        self.assertEqual(self.get("byname")[0], 200)

    def test_wrong_ca_fails(self):
        self.assert_fails("wrongca", "certificate", "local issuer")

    def test_other_ca_certificate_fails(self):
        self.assert_fails("other", "certificate", "local issuer")

    def test_expired_certificate_fails(self):
        self.assert_fails("expired", "certificate", "expired")

    def test_hostname_mismatch_fails_unless_insecure(self):
        self.assert_fails("badsni", "certificate", "hostname mismatch")
        self.assertEqual(self.get("insecure")[0], 200)
        warned = [o for o in self.veer.json_log_lines()
                  if "insecure_skip_verify" in o.get("msg", "") and "insecure" in o.get("msg", "")]
        self.assertTrue(warned, "no warning for insecure_skip_verify at load")

    def test_client_certificate(self):
        st, hd, body = self.get("mtls", "/echo", "POST", b"client cert")
        self.assertEqual((st, body), (200, b"client cert"))
        # TLS 1.3: the server's refusal comes after the client's handshake ended
        self.assert_fails("mtls_nocert", None, None)
        self.assert_fails("mtls_othercert", None, None)

    def test_connect_timeout_covers_handshake(self):
        before = len(handshake_lines(self.veer, "upstream"))
        t0 = time.time()
        st, _, body = self.get("stall")
        took = time.time() - t0
        self.assertIn(st, (502, 503), body)
        self.assertGreater(took, 0.25)
        self.assertLess(took, 2.0 * harness.SLOW)
        line = wait_handshake_line(self.veer, before + 1, "upstream")[-1]
        self.assertEqual((line["cluster"], line["kind"]), ("stall", "timeout"))


def upstream_handshakes(veer, cluster):
    """veer_upstream_tls_handshakes_total of a cluster: (full, resumed)."""
    st, text = veer.admin("GET", "/metrics")
    counts = {}
    for resumed in ("false", "true"):
        m = re.search(r'^veer_upstream_tls_handshakes_total\{cluster="%s",resumed="%s"\} (\d+)$' % (cluster, resumed),
                      text, re.M)
        if m is None:
            raise AssertionError("no handshake count of %s (resumed=%s) in /metrics" % (cluster, resumed))
        counts[resumed] = int(m.group(1))
    return counts["false"], counts["true"]


class SessionResumptionTest(unittest.TestCase):
    """Every request on a new upstream connection (HAProxy closes each one,
    veer keeps none idle); HAProxy tells in x-tls-resumed whether the
    handshake of the connection that carried the request was resumed."""

    RESUMED_HEADER = ("http-response set-header x-tls-resumed %[ssl_fc_is_resumed]", "option httpclose")

    @classmethod
    def setUpClass(cls):
        cls.hp13 = HAProxy(POD.addr, frontend_lines=cls.RESUMED_HEADER)
        cls.hp12 = HAProxy(POD.addr, bind_extra="ssl-max-ver TLSv1.2", frontend_lines=cls.RESUMED_HEADER)
        ca = p("ca.pem")
        cls.ca_copy = os.path.join(PKI, "ca-copy.pem")
        shutil.copy(ca, cls.ca_copy)
        clusters = {
            "tls13": {"endpoints": [cls.hp13.addr], "tls": {"ca": ca}},
            "tls12": {"endpoints": [cls.hp12.addr], "tls": {"ca": ca}},
            "noreuse": {"endpoints": [cls.hp13.addr], "tls": {"ca": ca, "session_reuse": False}},
            "reloaded": {"endpoints": [cls.hp13.addr], "tls": {"ca": ca}},
        }
        route = {"name": "all", "match": {"path_prefix": "/"}, "split": [{"cluster": "tls13", "weight": 100}],
                 "overrides": [{"header": "x-cluster", "equals": n, "cluster": n} for n in clusters]}
        cls.veer = Veer(base_config(clusters, [route], workers=1, limits={"max_idle_upstream": 0}))

    @classmethod
    def tearDownClass(cls):
        cls.veer.stop()

    def resumed_flags(self, cluster, n):
        flags = []
        for _ in range(n):
            st, hd, body = self.veer.request("GET", "/status/200", headers={"x-cluster": cluster}, timeout=15)
            self.assertEqual(st, 200, body)
            flags.append(hd.get("x-tls-resumed"))
        return flags

    def assert_counts(self, cluster, before, full, resumed):
        got = upstream_handshakes(self.veer, cluster)
        self.assertEqual((got[0] - before[0], got[1] - before[1]), (full, resumed), "%s: (full, resumed)" % cluster)

    def test_tls13_and_tls12_resume_after_the_first(self):
        for cluster in ("tls13", "tls12"):
            before = upstream_handshakes(self.veer, cluster)
            self.assertEqual(self.resumed_flags(cluster, 4), ["0", "1", "1", "1"], cluster)
            self.assert_counts(cluster, before, 1, 3)  # four handshakes: four connections

    def test_session_reuse_false_never_resumes(self):
        before = upstream_handshakes(self.veer, "noreuse")
        self.assertEqual(self.resumed_flags("noreuse", 3), ["0", "0", "0"])
        self.assert_counts("noreuse", before, 3, 0)

    def test_reload_changing_ca_or_sni_starts_with_a_full_handshake(self):
        self.assertEqual(self.resumed_flags("reloaded", 2)[-1], "1")
        for change in ({"ca": self.ca_copy}, {"sni": "localhost"}):
            cfg = json.loads(json.dumps(self.veer.config))
            cfg["clusters"]["reloaded"]["tls"].update(change)
            self.veer.write_config(cfg)
            st, js = self.veer.admin("POST", "/v1/reload")
            self.assertEqual(st, 200, js)
            before = upstream_handshakes(self.veer, "reloaded")
            self.assertEqual(self.resumed_flags("reloaded", 3), ["0", "1", "1"], change)
            self.assert_counts("reloaded", before, 1, 2)


if __name__ == "__main__":
    harness.main()
