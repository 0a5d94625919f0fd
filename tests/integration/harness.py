"""harness.py - shared helpers for veer's integration tests (python3 stdlib only).

Every test starts real processes on loopback ports chosen at run time: mock
embedding pods ($VEER_MOCKPOD) and veer itself ($VEER_BIN). Logs go to a
per-module temp dir that is removed when every test passed and kept (its path
printed, with the tail of each veer log) otherwise. Every process started here
is killed at exit (SIGTERM, then SIGKILL after 3 s), and dies with the test
runner if the runner itself is killed (PR_SET_PDEATHSIG).

Test modules end with `harness.main()` (unittest.main(verbosity=2) plus the
cleanup above) and call `harness.require_binaries()` in setUpModule: a missing
binary is a failure, never a skip.
"""

import atexit
import ctypes
import http.client
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

VEER_BIN = os.environ.get("VEER_BIN")
VEER_MOCKPOD = os.environ.get("VEER_MOCKPOD")
VEER_SOURCE_DIR = os.environ.get("VEER_SOURCE_DIR") or os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_module = os.path.splitext(os.path.basename(sys.argv[0] or "veer"))[0]
TMP = tempfile.mkdtemp(prefix="veer-it-%s-" % _module)
_procs = []          # every Popen we started, killed at exit
_veers = []          # for log tails on failure
_counter = itertools.count(1)
_lock = threading.Lock()


# ---------------------------------------------------------------- processes

def require_binaries():
    """Fail (not skip) when the binaries under test are not given."""
    missing = [name for name, val in (("VEER_BIN", VEER_BIN), ("VEER_MOCKPOD", VEER_MOCKPOD))
               if not val or not os.access(val, os.X_OK)]
    if missing:
        raise AssertionError(
            "%s not set or not executable (ctest sets them; by hand: "
            "VEER_BIN=build/veer VEER_MOCKPOD=build/veer-mockpod python3 %s)"
            % (", ".join(missing), sys.argv[0]))


def _pdeathsig():
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def spawn(argv, name, env=None):
    """Start argv with stdout/stderr in TMP/<name>.{out,err}. Returns (proc, out, err)."""
    out = os.path.join(TMP, name + ".out")
    err = os.path.join(TMP, name + ".err")
    fenv = dict(os.environ)
    if env:
        fenv.update(env)
    with open(out, "wb") as fo, open(err, "wb") as fe:
        proc = subprocess.Popen(argv, stdout=fo, stderr=fe, stdin=subprocess.DEVNULL,
                                env=fenv, preexec_fn=_pdeathsig)
    with _lock:
        _procs.append(proc)
    return proc, out, err


def kill(proc, sig=signal.SIGTERM, grace=3.0):
    """SIGTERM (or sig), then SIGKILL after grace seconds. Returns the exit code."""
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def _cleanup():
    with _lock:
        procs = list(_procs)
    for p in procs:
        if p.poll() is None:
            try:
                p.terminate()
            except ProcessLookupError:
                pass
    deadline = time.time() + 3
    for p in procs:
        try:
            p.wait(max(0.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


atexit.register(_cleanup)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run atexit on ctest's timeout kill


_ports_given = set()


def free_port():
    """A loopback port nobody listens on, never one this process handed out
    before: the kernel may give a just-closed port again, and a config that
    asked twice (listener and admin) would get the same port both times."""
    for _ in range(100):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        if port not in _ports_given:
            _ports_given.add(port)
            return port
    raise AssertionError("no fresh loopback port in 100 tries")


def is_asan():
    if os.environ.get("VEER_ASAN") == "1":
        return True
    if not VEER_BIN:
        return False
    try:
        out = subprocess.run(["ldd", VEER_BIN], capture_output=True, text=True, timeout=10).stdout
        return "asan" in out
    except Exception:
        return False


ASAN = is_asan()
SLOW = 3.0 if ASAN else 1.0   # timing slack factor


def wait_until(pred, timeout, interval=0.05, what="condition"):
    deadline = time.time() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.time() > deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


def sanitizer_report(path, n=30):
    """The first n lines of an ASan/UBSan report in a log, or None."""
    try:
        with open(path, "rb") as f:
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    for i, line in enumerate(lines):
        if "ERROR: AddressSanitizer" in line or "ERROR: LeakSanitizer" in line or "runtime error:" in line:
            return "\n".join(lines[i:i + n])
    return None


def tail(path, n=40):
    try:
        with open(path, "rb") as f:
            lines = f.read().decode("utf-8", "replace").splitlines()
        return "\n".join(lines[-n:])
    except OSError:
        return "(no log)"


# ---------------------------------------------------------------- mock pod

class MockPod:
    """A veer-mockpod process. faults (error_rate, latency, latency_p99,
    reset_rate, hang_rate) are applied through POST /fault once it listens."""

    def __init__(self, name, listen="127.0.0.1:0", **faults):
        self.name = name
        tag = "pod-%s-%d" % (name, next(_counter))
        self.ready_file = os.path.join(TMP, tag + ".ready")
        self.proc, self.out, self.err = spawn(
            [VEER_MOCKPOD, "--listen", listen, "--name", name, "--ready-file", self.ready_file], tag)
        self.port = self._wait_port(listen)
        self.host = "127.0.0.1" if not listen.startswith("[") else listen[1:listen.index("]")]
        self.addr = "%s:%d" % (self.host, self.port) if ":" not in self.host else "[%s]:%d" % (self.host, self.port)
        if faults:
            self.fault(**faults)

    def _wait_port(self, listen, timeout=10):
        """Wait for the ready file; the port comes from `listening HOST:PORT`
        (ready file or stdout) or from a ready file holding HOST:PORT / PORT."""
        pat = re.compile(rb"listening\s+\S*:(\d+)")
        deadline = time.time() + timeout * SLOW
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("mockpod %s exited with %s:\n%s\n%s" % (
                    self.name, self.proc.returncode, tail(self.out), tail(self.err)))
            if os.path.exists(self.ready_file):
                texts = []
                for path in (self.ready_file, self.out, self.err):
                    try:
                        with open(path, "rb") as f:
                            texts.append(f.read())
                    except OSError:
                        texts.append(b"")
                for t in texts:
                    m = pat.search(t)
                    if m:
                        return int(m.group(1))
                m = re.search(rb"(?:^|:)(\d+)$", texts[0].strip())
                if m and int(m.group(1)) > 0:
                    return int(m.group(1))
            time.sleep(0.02)
        raise AssertionError("mockpod %s did not become ready in %ss:\n%s" % (self.name, timeout, tail(self.err)))

    def request(self, method, path, body=None, headers=None, timeout=10):
        c = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            if isinstance(body, (dict, list)):
                body = json.dumps(body).encode()
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            data = r.read()
            return r.status, data
        finally:
            c.close()

    def fault(self, **faults):
        st, data = self.request("POST", "/fault", faults)
        assert st == 200, "mockpod /fault %r -> %s %r" % (faults, st, data)

    def stats(self):
        st, data = self.request("GET", "/stats")
        assert st == 200, (st, data)
        return json.loads(data)

    def reset_stats(self):
        self.request("POST", "/stats/reset")

    def stop(self):
        return kill(self.proc)


STANDARD_PODS = ("blue-1", "blue-2", "canary-1")


def start_pods(pods, names=STANDARD_PODS):
    """setUpModule helper: check the binaries, start one MockPod per name into pods."""
    require_binaries()
    for name in names:
        pods[name] = MockPod(name)


def pods_for_test(test, *names):
    """setUp helper: one MockPod per name, each stopped when the test ends
    (addCleanup, so also when a later setUp step fails)."""
    pods = []
    for name in names:
        pod = MockPod(name)
        test.addCleanup(pod.stop)
        pods.append(pod)
    return pods


def cluster_of(pod_name):
    """Pods are named '<cluster>-<n>'."""
    return pod_name.rsplit("-", 1)[0] if pod_name else None


# ---------------------------------------------------------------- veer

def base_config(clusters, routes, **top):
    """The minimal config of the contract with free loopback ports. clusters:
    {name: [addr, ...]} or {name: {cluster dict}}; routes: list of route dicts."""
    cl = {}
    for name, v in clusters.items():
        if isinstance(v, dict):
            cl[name] = v
        else:
            cl[name] = {"endpoints": list(v)}
    cfg = {
        "workers": 2,
        "listeners": [{"name": "http", "address": "127.0.0.1:%d" % free_port()}],
        "admin": {"address": "127.0.0.1:%d" % free_port(), "token_file": None},
        "state_file": None,
        "access_log": {"path": None},
        "limits": {"max_header_bytes": 65536, "max_body_bytes": 16777216,
                   "idle_timeout": "60s", "drain_timeout": "30s"},
        "clusters": cl,
        "routes": routes,
    }
    for k, v in top.items():
        if k == "limits":
            cfg["limits"].update(v)
        else:
            cfg[k] = v
    return cfg


def _port_of(address):
    return int(address.rsplit(":", 1)[1])


class Veer:
    """One veer process. config: a dict (written to TMP as JSON) or a path."""

    def __init__(self, config, extra_args=(), name="veer", env=None, start=True):
        self.tag = "%s-%d" % (name, next(_counter))
        self.own_ports = isinstance(config, dict)
        if isinstance(config, dict):
            self.config_path = os.path.join(TMP, self.tag + ".json")
            self.write_config(config)
        else:
            self.config_path = config
            with open(config) as f:
                self.config = json.load(f)
        self.port = _port_of(self.config["listeners"][0]["address"])
        self.admin_port = _port_of(self.config["admin"]["address"])
        self.extra_args = list(extra_args)
        self.env = env
        self.proc = None
        _veers.append(self)
        if start:
            self.start()

    # -- process
    def start(self, timeout=None):
        timeout = timeout or 15 * SLOW
        for attempt in range(3):
            self.proc, self.out, self.err = spawn(
                [VEER_BIN, "run", "-c", self.config_path] + self.extra_args,
                self.tag if attempt == 0 else "%s-retry%d" % (self.tag, attempt), env=self.env)
            self.started_at = time.time()
            try:
                self.wait_ready(timeout)
                return self
            except AssertionError:
                # free_port() races with other processes on the host: when a
                # port we picked was taken meanwhile, pick new ones and retry.
                if self.proc.poll() is None or "in use" not in tail(self.err) or not self.own_ports:
                    raise
                self.config["listeners"][0]["address"] = "127.0.0.1:%d" % free_port()
                self.config["admin"]["address"] = "127.0.0.1:%d" % free_port()
                self.write_config(self.config)
                self.port = _port_of(self.config["listeners"][0]["address"])
                self.admin_port = _port_of(self.config["admin"]["address"])
        raise AssertionError("veer could not bind its ports in 3 attempts:\n%s" % tail(self.err))

    def assert_alive(self):
        if not self.alive():
            if getattr(self, "_death_reported", False):
                raise AssertionError("veer is not running (exit %s, see the first failure)" % self.proc.returncode)
            self._death_reported = True
            raise AssertionError("veer is not running (exit %s):\n%s" % (
                self.proc.returncode if self.proc else None, sanitizer_report(self.err) or tail(self.err, 15)))

    def wait_ready(self, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("veer exited with %s before /readyz was 200:\n%s" % (
                    self.proc.returncode, tail(self.err)))
            try:
                st, _ = self.admin("GET", "/readyz", timeout=1)
                if st == 200:
                    return
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(0.05)
        raise AssertionError("veer /readyz not 200 after %ss:\n%s" % (timeout, tail(self.err)))

    def stop(self, sig=signal.SIGTERM, grace=None):
        """Signal veer and wait for it; SIGKILL after grace. Returns the exit code."""
        return kill(self.proc, sig, grace if grace is not None else 10 * SLOW)

    def signal(self, sig):
        self.proc.send_signal(sig)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def rss_kb(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    # -- config
    def write_config(self, config):
        self.config = config
        tmp = self.config_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(config, f, indent=2)
        os.rename(tmp, self.config_path)

    def reload(self):
        """SIGHUP: reload the config file."""
        self.proc.send_signal(signal.SIGHUP)

    # -- logs
    def _lines(self, path):
        try:
            with open(path, "rb") as f:
                return f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return []

    def stderr_lines(self):
        return self._lines(self.err)

    def stdout_lines(self):
        return self._lines(self.out)

    def json_log_lines(self, stream="stderr"):
        out = []
        lines = self.stderr_lines() if stream == "stderr" else self.stdout_lines()
        for line in lines:
            line = line.strip()
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out

    def audit_lines(self):
        """JSON log lines that carry the caller's address (admin mutations)."""
        return [o for o in self.json_log_lines() if isinstance(o, dict) and "remote" in o]

    # -- admin
    admin_host = "127.0.0.1"  # a subclass may listen elsewhere (e.g. "::1")

    def admin(self, method, path, body=None, token=None, timeout=10, headers=None):
        """(status, parsed JSON or raw text)."""
        c = http.client.HTTPConnection(self.admin_host, self.admin_port, timeout=timeout)
        try:
            h = dict(headers or {})
            if token is not None:
                h["Authorization"] = "Bearer " + token
            if isinstance(body, (dict, list)):
                body = json.dumps(body)
                h.setdefault("Content-Type", "application/json")
            c.request(method, path, body=body, headers=h)
            r = c.getresponse()
            data = r.read()
            try:
                return r.status, json.loads(data)
            except ValueError:
                return r.status, data.decode("utf-8", "replace")
        finally:
            c.close()

    def status(self):
        st, js = self.admin("GET", "/v1/status")
        assert st == 200, (st, js)
        return js

    def generation(self):
        return self.status()["generation"]

    def route(self, name):
        st, js = self.admin("GET", "/v1/routes/" + name)
        assert st == 200, (st, js)
        return js

    def weights(self, name):
        return route_weights(self.route(name))

    def set_weights(self, route, weights, token=None, **extra):
        body = {"weights": weights}
        body.update(extra)
        return self.admin("PUT", "/v1/routes/%s/weights" % route, body, token=token)

    # -- data plane
    def connection(self, timeout=10):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, timeout=10):
        """One request on a fresh connection: (status, {lower name: value}, body)."""
        c = self.connection(timeout)
        try:
            return do_request(c, method, path, body, headers)
        finally:
            c.close()


def do_request(conn, method, path, body=None, headers=None):
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
        headers = dict(headers or {})
        headers.setdefault("Content-Type", "application/json")
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    data = r.read()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, data


def metric(v, name, labels=""):
    """One sample of veer's /metrics: name with exactly these labels
    ('{cluster="blue"}'), as a float; None when absent."""
    st, text = v.admin("GET", "/metrics")
    assert st == 200, st
    if isinstance(text, bytes):
        text = text.decode()
    m = re.search(r"^%s%s (\S+)$" % (re.escape(name), re.escape(labels)), text, re.M)
    return float(m.group(1)) if m else None


def route_weights(route_json):
    """{cluster: weight} from a GET /v1/routes/NAME answer, accepting either
    {"weights": {...}} or {"split": [{"cluster", "weight"}]} (possibly nested
    under "route")."""
    r = route_json
    if isinstance(r, dict) and "route" in r and isinstance(r["route"], dict):
        r = r["route"]
    w = r.get("weights")
    if isinstance(w, dict):
        return {k: int(v) for k, v in w.items()}
    for key in ("weights", "split"):
        s = r.get(key)
        if isinstance(s, list):
            return {e["cluster"]: int(e["weight"]) for e in s}
    raise AssertionError("no weights in route answer: %r" % (route_json,))


EMBED_BODY = json.dumps({"text": "hello world", "model": "mini"}).encode()


# ---------------------------------------------------------------- raw HTTP/1.1

class RssSampler:
    """Samples a Veer's VmRSS every 20 ms while the `with` block runs."""

    def __init__(self, veer):
        self.veer = veer
        self.samples = []
        self.stop_ev = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop_ev.is_set():
            try:
                self.samples.append(self.veer.rss_kb())
            except OSError:
                break
            time.sleep(0.02)

    def __enter__(self):
        self.t.start()
        return self

    def __exit__(self, *exc):
        self.stop_ev.set()
        self.t.join()

    def peak(self):
        return max(self.samples) if self.samples else 0


class Response:
    def __init__(self, version, status, reason, headers, body):
        self.version, self.status, self.reason = version, status, reason
        self.headers = headers  # [(name, value)] as received
        self.body = body

    def header(self, name, default=None):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return default

    def header_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "<Response %s %s %r body=%r>" % (self.status, self.reason, self.headers, self.body[:200])


class ConnectionClosed(Exception):
    pass


class SocketClient:
    """A connected client socket that closes quietly, also as a `with` block:
    the base of the raw clients here and in the protocol tests."""

    def __init__(self, port, host="127.0.0.1", timeout=5.0, rcvbuf=None, nodelay=False):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if nodelay:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.timeout = timeout

    def send(self, data):
        self.sock.sendall(data)

    def recv_once(self, timeout):
        """One read: the bytes, None when none came within timeout, b"" once
        the peer closed or reset the connection."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1 << 20)
        except socket.timeout:
            return None
        except (ConnectionResetError, BrokenPipeError):
            return b""

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class RawConn(SocketClient):
    """A client socket that sends exact bytes and parses HTTP/1.1 responses."""

    def __init__(self, port, host="127.0.0.1", timeout=5.0, rcvbuf=None):
        super().__init__(port, host=host, timeout=timeout, rcvbuf=rcvbuf)
        self.buf = b""
        self.eof = False

    def _fill(self, deadline):
        """Read more bytes into buf. Raises ConnectionClosed on EOF, socket.timeout at deadline."""
        if self.eof:
            raise ConnectionClosed("connection closed by peer")
        remaining = deadline - time.time()
        if remaining <= 0:
            raise socket.timeout("timed out")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(1 << 20)
        except ConnectionResetError:
            self.eof = True
            raise ConnectionClosed("connection reset by peer")
        if not data:
            self.eof = True
            raise ConnectionClosed("connection closed by peer")
        self.buf += data

    def _read_line(self, deadline):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line, self.buf = self.buf[:i], self.buf[i + 2:]
                return line
            self._fill(deadline)

    def _read_exact(self, n, deadline):
        while len(self.buf) < n:
            self._fill(deadline)
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def read_head(self, timeout=None):
        deadline = time.time() + (timeout or self.timeout)
        while b"\r\n\r\n" not in self.buf:
            self._fill(deadline)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        m = re.match(r"(HTTP/\d\.\d) (\d{3})(?: (.*))?$", lines[0])
        if not m:
            raise AssertionError("bad status line %r" % lines[0])
        headers = []
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers.append((k, v.strip()))
        return Response(m.group(1), int(m.group(2)), m.group(3) or "", headers, b"")

    def read_response(self, timeout=None, method="GET", skip_1xx=True):
        """The next complete response (1xx interim responses skipped unless
        skip_1xx=False, in which case they are returned on their own)."""
        deadline = time.time() + (timeout or self.timeout)
        while True:
            r = self.read_head(max(0.001, deadline - time.time()))
            if 100 <= r.status < 200:
                if skip_1xx:
                    continue
                return r
            break
        te = (r.header("transfer-encoding") or "").lower()
        cl = r.header("content-length")
        if method == "HEAD" or r.status in (204, 304):
            r.body = b""
        elif "chunked" in te:
            parts = []
            while True:
                size_line = self._read_line(deadline)
                size = int(size_line.split(b";")[0].strip(), 16)
                if size == 0:
                    while self._read_line(deadline) != b"":  # trailers
                        pass
                    break
                parts.append(self._read_exact(size, deadline))
                if self._read_exact(2, deadline) != b"\r\n":
                    raise AssertionError("bad chunk terminator")
            r.body = b"".join(parts)
        elif cl is not None:
            r.body = self._read_exact(int(cl), deadline)
        else:
            while True:
                try:
                    self._fill(deadline)
                except ConnectionClosed:
                    break
            r.body, self.buf = self.buf, b""
        return r

    def read_responses(self, n, timeout=None):
        return [self.read_response(timeout) for _ in range(n)]

    def is_closed(self, timeout=2.0):
        """True when the peer closes (EOF or RST) within timeout with no
        further bytes; False if it is still open at timeout. Unexpected bytes
        raise AssertionError."""
        deadline = time.time() + timeout
        try:
            while True:
                before = len(self.buf)
                self._fill(deadline)
                if len(self.buf) > before:
                    raise AssertionError("unexpected bytes after response: %r" % self.buf[:200])
        except ConnectionClosed:
            return True
        except socket.timeout:
            return False


def raw_request(port, data, timeout=5.0):
    """Send bytes on a fresh connection, return (response, closed_after)."""
    with RawConn(port, timeout=timeout) as c:
        c.send(data)
        r = c.read_response(timeout)
        return r, c.is_closed(2.0)


def fan_out(port, n, method="GET", path="/", body=None, headers=None, threads=4, timeout=10):
    """n requests over `threads` keep-alive connections. headers may be a
    function of the request index. Returns [(index, status, x-pod)] in index
    order; a transport error is recorded as status 0 with the error text."""
    results = [None] * n
    counter = itertools.count()

    def run():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        while True:
            i = next(counter)
            if i >= n:
                break
            h = headers(i) if callable(headers) else headers
            try:
                st, hd, _ = do_request(conn, method, path, body, h)
                results[i] = (i, st, hd.get("x-pod"))
                if hd.get("connection", "").lower() == "close":
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
            except (OSError, http.client.HTTPException) as e:
                results[i] = (i, 0, repr(e))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        conn.close()

    ts = [threading.Thread(target=run) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return results


# ---------------------------------------------------------------- running

def main():
    """unittest.main(verbosity=2), then: fail when any veer logged a
    sanitizer report (even if every assertion held), remove the temp dir when
    everything passed, or keep it and show where it is (with the sanitizer
    reports or veer log tails) otherwise."""
    prog = unittest.main(verbosity=2, exit=False)
    ok = prog.result.wasSuccessful()
    _cleanup()  # veer exits here: LeakSanitizer reports now
    reports = [(v.tag, sanitizer_report(v.err)) for v in _veers if getattr(v, "err", None)]
    reports = [(tag, rep) for tag, rep in reports if rep]
    for tag, rep in reports:
        sys.stderr.write("---- %s: sanitizer report ----\n%s\n" % (tag, rep))
    if reports:
        sys.stderr.write("FAILED: veer reported memory errors (see above)\n")
        ok = False
    if ok:
        shutil.rmtree(TMP, ignore_errors=True)
    else:
        if not reports:
            for v in _veers[-4:]:
                if getattr(v, "err", None):
                    sys.stderr.write("---- %s stderr (tail) ----\n%s\n" % (v.tag, tail(v.err, 8)))
        sys.stderr.write("logs kept in %s\n" % TMP)
    sys.exit(0 if ok else 1)
