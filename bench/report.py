#!/usr/bin/env python3
"""Helpers for bench/run.sh: parse load-generator output and render the results tables.

    report.py h2load OUT [EXPECTED [ALPN]] -> "rps done" or exit 1 with the reason
    report.py wrk OUT                      -> "requests rps" or exit 1 with the reason
    report.py table RAW META               -> the HTTP/1.1 report (markdown) on stdout
    report.py protocols RAW META           -> every protocol's rows and ratios (markdown)

RAW is a TSV file written by run.sh: phase, round, target, key, value.
META is a JSON object with the run's parameters and notes.
"""
import json
import re
import statistics
import sys

PROXIES = ["haproxy", "nginx", "veer"]
LABEL = {"direct": "direct (no proxy)", "haproxy": "haproxy", "nginx": "nginx", "veer": "veer"}


def die(msg):
    print(msg)
    sys.exit(1)


def parse_h2load(path, expected=None, alpn=None):
    text = open(path, errors="replace").read()
    m = re.search(r"finished in [^,]+, ([\d.]+) req/s", text)
    r = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored, (\d+) timeout", text)
    s = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    if not (m and r and s):
        die("cannot parse h2load output (did it fail to connect?)")
    total, started, done, succeeded, failed, errored, timeout = map(int, r.groups())
    c2, c3, c4, c5 = map(int, s.groups())
    problems = []
    if failed or errored or timeout:
        problems.append(f"{failed} failed, {errored} errored, {timeout} timeout")
    if c3 or c4 or c5:
        problems.append(f"non-2xx responses: {c3} 3xx, {c4} 4xx, {c5} 5xx")
    if c2 != done:
        problems.append(f"{c2} 2xx of {done} done")
    if expected is not None and done != expected:
        problems.append(f"{done} done of {expected} expected")
    if expected is not None and succeeded != expected:
        problems.append(f"{succeeded} succeeded of {expected} expected")
    if alpn is not None:
        # h2load names h2 over cleartext "h2c": both mean HTTP/2 was spoken
        a = re.search(r"Application protocol: (\S+)", text)
        spoken = a.group(1) if a else "none"
        if spoken != alpn and not (alpn == "h2" and spoken == "h2c"):
            problems.append(f"spoke {spoken}, expected {alpn}")
    if done == 0:
        problems.append("no request completed")
    if problems:
        die("; ".join(problems))
    print(m.group(1), done)


def parse_wrk(path):
    text = open(path, errors="replace").read()
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", text)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if not (m and rps):
        die("cannot parse wrk output")
    problems = []
    e = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if e and any(int(x) for x in e.groups()):
        problems.append("socket errors: " + e.group(0))
    n = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if n and int(n.group(1)):
        problems.append(f"{n.group(1)} non-2xx/3xx responses")
    if int(m.group(1)) == 0:
        problems.append("no request completed")
    if problems:
        die("; ".join(problems))
    print(m.group(1), rps.group(1))


def load_raw(path):
    data = {}  # (phase, target, key) -> {round: value}
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 5:
                continue
            phase, rnd, target, key, value = parts
            data.setdefault((phase, target, key), {})[int(rnd)] = float(value)
    return data


def med(d):
    return statistics.median(d.values()) if d else None


def paired(a, b, op):
    """Median over rounds of op(a[r], b[r]) for the rounds both have."""
    rounds = sorted(set(a) & set(b))
    vals = [op(a[r], b[r]) for r in rounds if b[r] != 0 or op is not _ratio]
    return statistics.median(vals) if vals else None


def _ratio(x, y):
    return x / y


def _diff(x, y):
    return x - y


def fmt(v, digits=1, unit=""):
    if v is None:
        return "–"
    if digits == 0:
        return f"{v:,.0f}{unit}"
    return f"{v:,.{digits}f}{unit}"


def spread(d, digits=1):
    if not d or len(d) < 2:
        return ""
    return f" ({fmt(min(d.values()), digits)}–{fmt(max(d.values()), digits)})"


def table(raw_path, meta_path):
    data = load_raw(raw_path)
    meta = json.load(open(meta_path))
    get = lambda phase, target, key: data.get((phase, target, key), {})
    wrk_on = any(get("wrk", t, "cpu_us") for t in PROXIES)
    out = []
    w = out.append
    w(f"# veer HTTP/1.1 benchmark — {meta['timestamp']}")
    w("")
    w(f"- commit: `{meta.get('commit', '?')}`; veer: {meta.get('veer_version', '?')}; "
      f"veer features: {meta.get('veer_features', 'defaults')}")
    w(f"- machine: {meta.get('machine', '?')}")
    if "load_start" in meta:
        w(f"- load average (1/5/15 min) at start: {meta['load_start']}; at end: {meta['load_end']} "
          f"(the machine is shared)")
    w(f"- tools: {meta.get('tools', '?')}")
    w(f"- workload: GET {meta['path']} → {meta['body_bytes']}-byte JSON from nginx (static file); "
      f"every proxy has 1 worker/thread and upstream keep-alive")
    w(f"- closed loop: `h2load --h1 -n {meta['requests']} -c {meta['conns']} -t 1`"
      + (f"; cross-check `wrk -t1 -c{meta['conns']} -d{meta['wrk_duration']}`" if wrk_on else ""))
    w(f"- open loop: `bench/oload -c {meta['lat_conns']} -r {meta['rate']:.0f} -d {meta['lat_duration']} "
      f"-w {meta['lat_warmup']}` = {meta['rate']:,.0f} req/s total on a fixed schedule, latency from each "
      f"request's due time (no coordinated omission) ({meta['rate_note']})")
    w(f"- rounds: {meta['rounds']} (targets interleaved, order rotated each round); "
      f"values are medians over rounds, (min–max) in brackets; pinning: {meta['pin']}")
    w("")
    h1_body(data, meta, w)
    print("\n".join(out))


def h1_body(data, meta, w):
    """The HTTP/1.1 table, its ratios, veer's RSS, notes and per-round values."""
    get = lambda phase, target, key: data.get((phase, target, key), {})
    targets = ["direct"] + [p for p in PROXIES]
    skipped = meta.get("skipped", {})
    wrk_on = any(get("wrk", t, "cpu_us") for t in PROXIES)
    hdr = ["target", "CPU µs/req"] + (["CPU µs/req (wrk)"] if wrk_on else []) + \
          ["req/s (closed loop)", "P50 µs", "P99 µs", "added P99 µs"]
    w("| " + " | ".join(hdr) + " |")
    w("|" + "---|" * len(hdr))
    direct_p99 = get("lat", "direct", "p99_us")
    for t in targets:
        if t in skipped:
            w(f"| {LABEL[t]} | skipped: {skipped[t]} |" + " |" * (len(hdr) - 2))
            continue
        cpu = get("closed", t, "cpu_us")
        row = [LABEL[t], "–" if t == "direct" else fmt(med(cpu), 2) + spread(cpu, 2)]
        if wrk_on:
            wc = get("wrk", t, "cpu_us")
            row.append("–" if t == "direct" else fmt(med(wc), 2) + spread(wc, 2))
        rps = get("closed", t, "rps")
        p50, p99 = get("lat", t, "p50_us"), get("lat", t, "p99_us")
        row += [fmt(med(rps), 0) + spread(rps, 0), fmt(med(p50), 0) + spread(p50, 0),
                fmt(med(p99), 0) + spread(p99, 0),
                "–" if t == "direct" else fmt(paired(p99, direct_p99, _diff), 0)]
        w("| " + " | ".join(row) + " |")
    w("")
    # ratios: median over rounds of the per-round ratio (both measured in the same round)
    w("Ratios (median over rounds of the per-round ratio; < 1 means veer uses less CPU / > 1 means "
      "veer serves more req/s):")
    w("")
    w("| ratio | CPU/req | req/s |")
    w("|---|---|---|")
    pairs = [("veer", "haproxy", "veer/HAProxy"), ("veer", "nginx", "veer/nginx"),
             ("nginx", "haproxy", "nginx/HAProxy (reference)")]
    for a, b, label in pairs:
        if a in skipped or b in skipped:
            w(f"| {label} | – | – |")
            continue
        c = paired(get("closed", a, "cpu_us"), get("closed", b, "cpu_us"), _ratio)
        r = paired(get("closed", a, "rps"), get("closed", b, "rps"), _ratio)
        w(f"| {label} | {fmt(c, 2)} | {fmt(r, 2)} |")
    w("")
    if "veer" not in skipped:
        idle = get("mem", "veer", "rss_idle_kb")
        after = get("mem", "veer", "rss_after_kb")
        w(f"veer RSS: idle {fmt(med(idle), 0)} kB (after start, before load); "
          f"after the run {fmt(med(after), 0)} kB")
        w("")
    for note in meta.get("notes", []):
        w(f"- {note}")
    if meta.get("notes"):
        w("")
    # raw values per round
    w("<details><summary>per-round values</summary>")
    w("")
    w("| round | target | CPU µs/req | req/s | wrk CPU µs/req | P50 µs | P99 µs | open-loop req/s achieved |")
    w("|---|---|---|---|---|---|---|---|")
    for r in range(1, int(meta["rounds"]) + 1):
        for t in targets:
            if t in skipped:
                continue
            v = lambda ph, k, d=1: fmt(get(ph, t, k).get(r), d)
            w(f"| {r} | {t} | {v('closed', 'cpu_us', 2)} | {v('closed', 'rps', 0)} | "
              f"{v('wrk', 'cpu_us', 2)} | {v('lat', 'p50_us', 0)} | {v('lat', 'p99_us', 0)} | "
              f"{v('lat', 'rate', 0)} |")
    w("")
    w("</details>")


# The rows measured with h2load only (CPU and throughput): how each is driven.
H2_ROWS = [
    ("h2c", "h2c (HTTP/2 prior knowledge, cleartext)", "h2load -n {n} -c {c} -m {m} -t 1 http://…"),
    ("tls-h1", "TLS, HTTP/1.1 (ALPN http/1.1)", "h2load --h1 -n {n} -c {c} -t 1 --tls13-ciphers=… https://…"),
    ("tls-h2", "TLS, HTTP/2 (ALPN h2)", "h2load -n {n} -c {c} -m {m} -t 1 --tls13-ciphers=… https://…"),
]


def protocols(raw_path, meta_path):
    data = load_raw(raw_path)
    meta = json.load(open(meta_path))
    get = lambda phase, target, key: data.get((phase, target, key), {})
    protos = meta.get("protocols", ["h1"])
    skipped = meta.get("skipped", {})
    pskip = meta.get("protocol_skipped", {})
    n, c, m = meta["requests"], meta["conns"], meta.get("streams", 10)
    out = []
    w = out.append
    w(f"# veer protocol benchmark — {meta['timestamp']}")
    w("")
    w(f"- commit: `{meta.get('commit', '?')}`; veer: {meta.get('veer_version', '?')}; "
      f"veer features: {meta.get('veer_features', 'defaults')}")
    w(f"- machine: {meta.get('machine', '?')}")
    w(f"- load average (1/5/15 min) at start: {meta.get('load_start', '?')}; at end: "
      f"{meta.get('load_end', '?')} (the machine is shared)")
    w(f"- tools: {meta.get('tools', '?')}")
    w(f"- workload: GET {meta['path']} → {meta['body_bytes']}-byte JSON from nginx (static file) over "
      f"HTTP/1.1 keep-alive; every proxy has 1 worker/thread; only the downstream protocol changes "
      f"between rows. TLS: one self-signed ECDSA P-256 certificate, ALPN h2,http/1.1 on every proxy")
    w(f"- protocols: {', '.join(protos)}; rounds: {meta['rounds']} (targets interleaved, order rotated "
      f"each round); values are medians over rounds, (min–max) in brackets; pinning: {meta['pin']}")
    w("- CPU µs/req: utime+stime of the proxy's processes (/proc) around the run / requests done")
    w("")
    if "h1" in protos:
        w("## HTTP/1.1 (cleartext)")
        w("")
        w(f"- closed loop: `h2load --h1 -n {n} -c {c} -t 1`"
          + (f"; cross-check `wrk -t1 -c{c} -d{meta['wrk_duration']}`"
             if any(get("wrk", t, "cpu_us") for t in PROXIES) else ""))
        w(f"- open loop: `bench/oload -c {meta['lat_conns']} -r {meta['rate']:.0f} -d {meta['lat_duration']} "
          f"-w {meta['lat_warmup']}` ({meta['rate_note']})")
        w("")
        h1_body(data, meta, w)
        w("")
    for key, title, cmd in H2_ROWS:
        if key not in protos:
            continue
        w(f"## {title}")
        w("")
        w(f"`{cmd.format(n=n, c=c, m=m)}`")
        w("")
        w("| target | CPU µs/req | req/s |")
        w("|---|---|---|")
        for t in PROXIES:
            why = skipped.get(t) or pskip.get(key, {}).get(t)
            if why:
                w(f"| {LABEL[t]} | skipped: {why} | |")
                continue
            cpu, rps = get(key, t, "cpu_us"), get(key, t, "rps")
            w(f"| {LABEL[t]} | {fmt(med(cpu), 2)}{spread(cpu, 2)} | {fmt(med(rps), 0)}{spread(rps, 0)} |")
        w("")
        neg = meta.get("tls_negotiated", {}).get(key, {})
        if neg:
            w("negotiated (as h2load reported it): "
              + "; ".join(f"{t} {neg[t]}" for t in PROXIES if t in neg))
            w("")
    w("## Ratios per protocol")
    w("")
    w("Median over rounds of the per-round ratio (both measured in the same round); CPU/req < 1 "
      "means veer uses less CPU per request, req/s > 1 means veer serves more.")
    w("")
    w("| protocol | veer/HAProxy CPU/req | veer/HAProxy req/s | veer/nginx CPU/req | veer/nginx req/s "
      "| nginx/HAProxy CPU/req (reference) |")
    w("|---|---|---|---|---|---|")
    for key in ["h1"] + [k for k, _, _ in H2_ROWS]:
        if key not in protos:
            continue
        phase = "closed" if key == "h1" else key
        gone = set(skipped) | set(pskip.get(key, {}))

        def ratio(a, b, k):
            if a in gone or b in gone:
                return "–"
            return fmt(paired(get(phase, a, k), get(phase, b, k), _ratio), 2)
        w(f"| {key} | {ratio('veer', 'haproxy', 'cpu_us')} | {ratio('veer', 'haproxy', 'rps')} | "
          f"{ratio('veer', 'nginx', 'cpu_us')} | {ratio('veer', 'nginx', 'rps')} | "
          f"{ratio('nginx', 'haproxy', 'cpu_us')} |")
    w("")
    if "h1" not in protos and "veer" not in skipped:
        idle, after = get("mem", "veer", "rss_idle_kb"), get("mem", "veer", "rss_after_kb")
        w(f"veer RSS: idle {fmt(med(idle), 0)} kB (after start, before load); "
          f"after the run {fmt(med(after), 0)} kB")
        w("")
    rows = [k for k, _, _ in H2_ROWS if k in protos]
    if rows:
        w("<details><summary>per-round values (h2c, TLS)</summary>")
        w("")
        w("| protocol | round | target | CPU µs/req | req/s |")
        w("|---|---|---|---|---|")
        for key in rows:
            for r in range(1, int(meta["rounds"]) + 1):
                for t in PROXIES:
                    cpu, rps = get(key, t, "cpu_us").get(r), get(key, t, "rps").get(r)
                    if cpu is None and rps is None:
                        continue
                    w(f"| {key} | {r} | {t} | {fmt(cpu, 2)} | {fmt(rps, 0)} |")
        w("")
        w("</details>")
    print("\n".join(out))


def main():
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "h2load":
        parse_h2load(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else None,
                     sys.argv[4] if len(sys.argv) > 4 else None)
    elif cmd == "wrk":
        parse_wrk(sys.argv[2])
    elif cmd == "table":
        table(sys.argv[2], sys.argv[3])
    elif cmd == "protocols":
        protocols(sys.argv[2], sys.argv[3])
    elif cmd == "minrps":
        # minrps RAW target... -> min over targets of the median closed-loop rps
        data = load_raw(sys.argv[2])
        vals = [med(data.get(("closed", t, "rps"), {})) for t in sys.argv[3:]]
        vals = [v for v in vals if v]
        if not vals:
            die("no throughput measured")
        print(min(vals))
    else:
        die(__doc__)


if __name__ == "__main__":
    main()
