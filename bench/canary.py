#!/usr/bin/env python3
"""bench/canary.py — the canary loop's client side, for scripts/demo.sh and bench/canary.sh.

  canary.py load PORT RATE CSV        paced POSTs to /api/v1/embed, one CSV line per response:
                                      time,status,x-pod (runs until killed)
  canary.py release ADMIN ROUTE BODY  start a run (BODY: JSON of POST /v1/routes/ROUTE/canary),
        [--fault-at W --fault-rate R --fault-pod HOST:PORT...] [--csv CSV] [--quiet]
        [--timeout S] [--result FILE]
                                      print a progress line per change; once the canary's weight
                                      reaches W, POST /fault {"error_rate": R} to the pods; when the
                                      run ends, write its measurements (JSON) to FILE
  canary.py report RESULTS.jsonl TITLE  the markdown table of bench/canary.sh's trials

Times come from the run's event history (wall-clock at_ms), the fault's time from
when the pods took it, and the request counts from the load generator's CSV.
"""
import argparse
import http.client
import json
import math
import statistics
import sys
import threading
import time
import urllib.error
import urllib.request

BODY = b'{"text":"hello","model":"embed-small-v1"}'


def load(port, rate, path):
    """Paced POSTs over 8 keep-alive connections, each on its own schedule."""
    out, lock = open(path, "w", buffering=1), threading.Lock()
    conns = 8

    def run(k):
        c, t = None, time.time() + k / rate
        while True:
            t += conns / rate
            time.sleep(max(0.0, t - time.time()))
            try:
                c = c or http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                c.request("POST", "/api/v1/embed", BODY, {"content-type": "application/json"})
                r = c.getresponse()
                r.read()
                st, pod = r.status, r.getheader("x-pod", "-")
                if r.getheader("connection", "").lower() == "close":
                    c.close()
                    c = None
            except (OSError, http.client.HTTPException):
                if c is not None:
                    c.close()
                c, st, pod = None, 0, "-"
            with lock:
                out.write("%.3f,%d,%s\n" % (time.time(), st, pod))

    ts = [threading.Thread(target=run, args=(k,), daemon=True) for k in range(conns)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def call(method, url, body=None):
    req = urllib.request.Request(url, None if body is None else json.dumps(body).encode(),
                                 {"content-type": "application/json"}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        try:
            return e.code, json.load(e)
        except ValueError:
            return e.code, {}


def read_csv(path):
    rows = []
    with open(path) as f:
        for line in f:
            parts = line.strip().split(",")
            if len(parts) == 3:
                try:
                    rows.append((float(parts[0]), int(parts[1]), parts[2]))
                except ValueError:
                    pass  # a line cut short by the writer
    return rows


def progress_line(run):
    w = run["weight"]
    line = "%-11s %s -> %s [%-10s] %3d%%  failed checks %d/%d" % (
        run["phase"], run["stable"], run["canary"], "#" * (w // 10), w, run["failed_checks"],
        run["policy"]["threshold"])
    a = run.get("last_analysis") or {}
    c = a.get("canary") or {}
    if a:
        line += "  last: %s" % a.get("verdict", "?")
        if c.get("requests"):
            line += ", canary %d req %d failed" % (c["requests"], c.get("failures", 0))
            if c.get("success_rate") is not None:
                line += " (%.1f%% ok)" % c["success_rate"]
        if a.get("reasons"):
            line += " [%s]" % ",".join(a["reasons"])
    return line


def release(args):
    route_url = "%s/v1/routes/%s/canary" % (args.admin, args.route)
    body = json.loads(args.body)
    say = (lambda s: None) if args.quiet else (lambda s: print("[demo]   " + s, flush=True))
    st, run = call("POST", route_url, body)
    if st != 200:
        print("[canary] starting the run answered %d: %s" % (st, run), file=sys.stderr)
        return 2
    t0, last, faulted = time.time(), None, None
    while True:
        st, run = call("GET", route_url)
        if st != 200:
            print("[canary] GET %s answered %d: %s" % (route_url, st, run), file=sys.stderr)
            return 2
        line = progress_line(run)
        if line != last:
            say("%5.1fs  %s" % (time.time() - t0, line))
            last = line
        if args.fault_at is not None and faulted is None and run["weight"] >= args.fault_at \
                and run["phase"] == "progressing":
            for pod in args.fault_pod:
                fst, _ = call("POST", "http://%s/fault" % pod, {"error_rate": args.fault_rate})
                if fst != 200:
                    print("[canary] POST /fault to %s answered %d" % (pod, fst), file=sys.stderr)
                    return 2
            faulted = time.time()
            say("%5.1fs  >>> %s starts failing %g%% of requests (weight %d%%)" %
                (faulted - t0, run["canary"], 100 * args.fault_rate, run["weight"]))
        if run["phase"] in ("succeeded", "rolled_back", "paused"):
            break
        if time.time() - t0 > args.timeout:
            print("[canary] the run did not end within %g s (phase %s)" % (args.timeout, run["phase"]),
                  file=sys.stderr)
            return 2
        time.sleep(0.05)
    for pod in args.fault_pod:
        call("POST", "http://%s/fault" % pod, {"error_rate": 0})
    events = run.get("events") or []
    started = next((e["at_ms"] / 1000 for e in events if e["kind"] == "started"), run["started_ms"] / 1000)
    ended = next((e["at_ms"] / 1000 for e in reversed(events) if e["kind"] == run["phase"]),
                 run["updated_ms"] / 1000)
    res = {"phase": run["phase"], "reason": run.get("reason"), "started": started, "ended": ended,
           "run_s": ended - started, "failed_checks": run["failed_checks"], "analyses": run.get("analyses"),
           "faulted": faulted, "fault_weight": None}
    if faulted is not None:
        # the weight at the fault, from the history (the poller saw it within 50 ms)
        at = [e for e in events if e["at_ms"] / 1000 <= faulted]
        res["fault_weight"] = at[-1]["weight"] if at else None
        res["detect_s"] = ended - faulted
        res["checks"] = [{"t": round(e["at_ms"] / 1000 - faulted, 2), "kind": e["kind"], "weight": e["weight"],
                          "verdict": (e.get("analysis") or {}).get("verdict")}
                         for e in events if e["at_ms"] / 1000 > faulted]
    if args.csv:
        time.sleep(0.3)  # responses in flight at the end land in the CSV
        rows = read_csv(args.csv)
        lo = faulted if faulted is not None else started
        win = [r for r in rows if lo <= r[0] <= ended]
        res["window_requests"] = len(win)
        res["window_failed"] = sum(1 for r in win if not 200 <= r[1] < 300)
        res["window_canary_requests"] = sum(1 for r in win if r[2] in args.canary_pod)
    if args.result:
        with open(args.result, "w") as f:
            json.dump(res, f)
    return 0


def pct(xs, p):
    """Nearest-rank percentile."""
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, math.ceil(p / 100 * len(xs)) - 1))]


def report(args):
    trials = [json.loads(line) for line in open(args.results) if line.strip()]
    out = [args.title, "",
           "| trial | outcome | fault at weight | fault -> weight 0 (s) | requests | failed | failed % |",
           "| ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    for i, t in enumerate(trials, 1):
        det = t.get("detect_s")
        req, fail = t.get("window_requests", 0), t.get("window_failed", 0)
        outcome = {"rolled_back": "rolled back", "succeeded": "PROMOTED (miss)"}.get(t["phase"], t["phase"])
        if t.get("faulted") is None:
            outcome += " before the fault"
        out.append("| %d | %s | %s | %s | %d | %d | %.2f |" % (
            i, outcome, t.get("fault_weight") if t.get("fault_weight") is not None else "-",
            "%.2f" % det if det is not None and t["phase"] == "rolled_back" else "-", req, fail,
            100.0 * fail / max(req, 1)))
    rb = [t for t in trials if t["phase"] == "rolled_back" and t.get("faulted") is not None]
    misses = sum(1 for t in trials if t["phase"] == "succeeded")
    out.append("")
    if rb:
        d = [t["detect_s"] for t in rb]
        share = [100.0 * t["window_failed"] / max(t["window_requests"], 1) for t in rb]
        out.append("| over %d rollbacks | median | p90 | max |" % len(rb))
        out.append("| --- | ---: | ---: | ---: |")
        out.append("| fault -> weight 0 (s) | %.2f | %.2f | %.2f |" % (statistics.median(d), pct(d, 90), max(d)))
        out.append("| failed share of all requests in that time (%%) | %.2f | %.2f | %.2f |" % (
            statistics.median(share), pct(share, 90), max(share)))
        out.append("| failed requests in that time | %d | %d | %d |" % (
            statistics.median([t["window_failed"] for t in rb]),
            pct([t["window_failed"] for t in rb], 90), max(t["window_failed"] for t in rb)))
        out.append("")
    out.append("Rolled back after the fault: %d of %d trials; promoted despite the fault (misses): %d; other: %d." % (
        len(rb), len(trials), misses, len(trials) - len(rb) - misses))
    print("\n".join(out))
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("load")
    p.add_argument("port", type=int)
    p.add_argument("rate", type=float)
    p.add_argument("csv")
    p = sub.add_parser("release")
    p.add_argument("admin")
    p.add_argument("route")
    p.add_argument("body")
    p.add_argument("--fault-at", type=int)
    p.add_argument("--fault-rate", type=float, default=0.05)
    p.add_argument("--fault-pod", action="append", default=[])
    p.add_argument("--canary-pod", action="append", default=[], help="x-pod names of the canary")
    p.add_argument("--csv")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--timeout", type=float, default=60)
    p.add_argument("--result")
    p = sub.add_parser("report")
    p.add_argument("results")
    p.add_argument("title")
    args = ap.parse_args()
    if args.cmd == "load":
        load(args.port, args.rate, args.csv)
        return 0
    return release(args) if args.cmd == "release" else report(args)


if __name__ == "__main__":
    sys.exit(main())
