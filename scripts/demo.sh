#!/usr/bin/env bash
# scripts/demo.sh BUILD_DIR — `make demo`: veer splitting traffic 90/10 between a
# blue pool (blue-1, blue-2) and a canary pool (canary-1) of mock embedding pods.
#
# Starts the three pods on free loopback ports, veer in front of them with one
# route (path_prefix /api/v1/embed) split blue 90 / canary 10, sends ~5 s of
# embedding requests with wrk (lua/embed.lua: 2 threads, 20 connections), and
# prints which pod served how many requests (from the x-pod response header)
# and each cluster's share against the configured split. Exits 0 when every
# response was 2xx and each cluster's share is within ±2 percentage points of
# its configured weight; non-zero otherwise. Logs stay in the printed directory.
#
# Environment: DEMO_DURATION [5s], DEMO_THREADS [2], DEMO_CONNS [20],
# DEMO_TOLERANCE [2] (percentage points), DEMO_LOG_DIR [a new /tmp/veer-demo.*].
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/procs.sh
. "$ROOT/scripts/procs.sh"
BUILD_DIR=${1:-build}
case $BUILD_DIR in /*) ;; *) BUILD_DIR=$ROOT/$BUILD_DIR ;; esac
VEER=${VEER_BIN:-$BUILD_DIR/veer}
MOCKPOD=${VEER_MOCKPOD:-$BUILD_DIR/veer-mockpod}
DURATION=${DEMO_DURATION:-5s}
THREADS=${DEMO_THREADS:-2}
CONNS=${DEMO_CONNS:-20}
TOLERANCE=${DEMO_TOLERANCE:-2}
BLUE_WEIGHT=90
CANARY_WEIGHT=10

say() { printf '[demo] %s\n' "$*"; }
die() { printf '[demo] ERROR: %s\n' "$*" >&2; exit 1; }

for tool in python3:python3 curl:curl wrk:wrk; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || die "'${tool%%:*}' not found: apt-get install -y ${tool#*:}"
done
[ -x "$VEER" ] || die "no veer binary at $VEER (make build)"
[ -x "$MOCKPOD" ] || die "no veer-mockpod binary at $MOCKPOD (make build)"

LOGS=${DEMO_LOG_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/veer-demo.XXXXXX")}
mkdir -p "$LOGS"
declare -A PID=()

cleanup() {
  local rc=$?
  stop_all
  echo "[demo] logs: $LOGS (veer.log, veer.json, <pod>.log, wrk.out)"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start() { # start NAME CMD... (own session, output to LOGS/NAME.log)
  local name=$1; shift
  setsid "$@" >"$LOGS/$name.log" 2>&1 </dev/null &
  PID[$name]=$!
}
alive() { kill -0 "${PID[$1]}" 2>/dev/null; }
show_log() { echo "---- $LOGS/$1.log (last lines)" >&2; tail -n 20 "$LOGS/$1.log" >&2 || true; }
http_code() { curl -s -o /dev/null -m 2 -w '%{http_code}' "$@" 2>/dev/null || true; }

# ---------------------------------------------------------------- mock pods
declare -A POD_PORT=() POD_CLUSTER=([blue-1]=blue [blue-2]=blue [canary-1]=canary)
PODS=(blue-1 blue-2 canary-1)
STDBUF=""
command -v stdbuf >/dev/null 2>&1 && STDBUF="stdbuf -oL -eL"
for pod in "${PODS[@]}"; do
  # shellcheck disable=SC2086
  start "$pod" $STDBUF "$MOCKPOD" --listen 127.0.0.1:0 --name "$pod" --ready-file "$LOGS/$pod.ready"
done
for pod in "${PODS[@]}"; do
  port=""
  for _ in $(seq 1 100); do
    alive "$pod" || { show_log "$pod"; die "mock pod $pod exited during start-up"; }
    port=$(sed -n 's/.*listening 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$LOGS/$pod.log" | head -n 1)
    if [ -z "$port" ] && [ -s "$LOGS/$pod.ready" ]; then
      port=$(grep -o '[0-9][0-9]*$' "$LOGS/$pod.ready" | head -n 1 || true)
    fi
    [ -n "$port" ] && [ "$(http_code "http://127.0.0.1:$port/health")" = 200 ] && break
    port=""
    sleep 0.1
  done
  [ -n "$port" ] || { show_log "$pod"; die "mock pod $pod did not print 'listening 127.0.0.1:PORT' and answer GET /health within 10s"; }
  POD_PORT[$pod]=$port
  say "mock pod $pod (cluster ${POD_CLUSTER[$pod]}) on 127.0.0.1:$port"
done

# ---------------------------------------------------------------- veer
read -r P_LISTEN P_ADMIN < <(python3 -c '
import socket
a, b = socket.socket(), socket.socket()
a.bind(("127.0.0.1", 0)); b.bind(("127.0.0.1", 0))
print(a.getsockname()[1], b.getsockname()[1])')

cat >"$LOGS/veer.json" <<EOF
{
  "listeners": [{"name": "http", "address": "127.0.0.1:$P_LISTEN"}],
  "admin": {"address": "127.0.0.1:$P_ADMIN"},
  "state_file": "$LOGS/state.json",
  "access_log": {"path": "$LOGS/access.log"},
  "clusters": {
    "blue": {"endpoints": ["127.0.0.1:${POD_PORT[blue-1]}", "127.0.0.1:${POD_PORT[blue-2]}"]},
    "canary": {"endpoints": ["127.0.0.1:${POD_PORT[canary-1]}"]}
  },
  "routes": [
    {"name": "embed",
     "match": {"path_prefix": "/api/v1/embed"},
     "split": [{"cluster": "blue", "weight": $BLUE_WEIGHT}, {"cluster": "canary", "weight": $CANARY_WEIGHT}]}
  ]
}
EOF

if ! "$VEER" check -c "$LOGS/veer.json" >"$LOGS/veer-check.log" 2>&1; then
  cat "$LOGS/veer-check.log" >&2
  die "veer check rejected $LOGS/veer.json"
fi
start veer "$VEER" run -c "$LOGS/veer.json"
ready=0
for _ in $(seq 1 100); do
  alive veer || { show_log veer; die "veer exited during start-up"; }
  [ "$(http_code "http://127.0.0.1:$P_ADMIN/readyz")" = 200 ] && { ready=1; break; }
  sleep 0.1
done
[ "$ready" = 1 ] || { show_log veer; die "veer: admin /readyz did not answer 200 within 10s"; }
code=""
for _ in $(seq 1 50); do
  code=$(http_code -X POST -H 'content-type: application/json' -d '{"text":"hello","model":"embed-small-v1"}' \
    "http://127.0.0.1:$P_LISTEN/api/v1/embed")
  [ "$code" = 200 ] && break
  sleep 0.1
done
[ "$code" = 200 ] || { show_log veer; die "veer is ready but POST /api/v1/embed answered '$code'"; }
say "veer on 127.0.0.1:$P_LISTEN (admin 127.0.0.1:$P_ADMIN): route embed, blue $BLUE_WEIGHT / canary $CANARY_WEIGHT"

# ---------------------------------------------------------------- load
say "load: wrk -t$THREADS -c$CONNS -d$DURATION -s lua/embed.lua"
wrk_rc=0
wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" -s "$ROOT/lua/embed.lua" "http://127.0.0.1:$P_LISTEN" >"$LOGS/wrk.out" 2>&1 || wrk_rc=$?
alive veer || { show_log veer; die "veer died under load"; }
[ "$wrk_rc" = 0 ] || { cat "$LOGS/wrk.out" >&2; die "wrk failed (exit $wrk_rc)"; }
grep -qE '^x-pod-count' "$LOGS/wrk.out" || { cat "$LOGS/wrk.out" >&2; die "wrk printed no per-pod counts"; }
sed -n '/requests in/,/Transfer/p' "$LOGS/wrk.out" | sed 's/^/  /'

# ---------------------------------------------------------------- report
pod_map=""
for pod in "${PODS[@]}"; do pod_map="$pod_map$pod=${POD_CLUSTER[$pod]},"; done
python3 - "$LOGS/wrk.out" "$pod_map" "blue=$BLUE_WEIGHT,canary=$CANARY_WEIGHT" "$TOLERANCE" <<'EOF'
import re, sys
out, pod_map, weights, tol = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
cluster_of = dict(kv.split("=") for kv in pod_map.strip(",").split(","))
weights = {k: float(v) for k, v in (kv.split("=") for kv in weights.split(","))}
text = open(out).read()
pods = {m.group(1): int(m.group(2)) for m in re.finditer(r"^x-pod-count\t(\S+)\t(\d+)$", text, re.M)}
statuses = {m.group(1): int(m.group(2)) for m in re.finditer(r"^status-count\t(\S+)\t(\d+)$", text, re.M)}
sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
total = sum(pods.values())
problems = []
print()
print(f"  {'pod':<22} {'cluster':<10} {'requests':>10} {'share':>8}")
for pod in sorted(pods):
    label = "(no x-pod header)" if pod == "-" else pod
    cl = cluster_of.get(pod, "?")
    print(f"  {label:<22} {cl:<10} {pods[pod]:>10,} {100 * pods[pod] / max(total, 1):>7.2f}%")
print(f"  {'total':<22} {'':<10} {total:>10,}")
non2xx = {c: n for c, n in statuses.items() if not c.startswith("2")}
if non2xx:
    problems.append("non-2xx responses: " + ", ".join(f"{n} x {c}" for c, n in sorted(non2xx.items())))
unknown = {p: n for p, n in pods.items() if p not in cluster_of}
if unknown:
    problems.append("responses from no known pod: " + ", ".join(f"{p}: {n}" for p, n in unknown.items()))
if sock and any(int(x) for x in sock.groups()):
    problems.append(sock.group(0))
if total == 0:
    problems.append("no responses")
wsum = sum(weights.values())
counted = sum(n for p, n in pods.items() if p in cluster_of)
print()
print(f"  {'cluster':<10} {'configured':>10} {'observed':>10} {'diff (pp)':>10}")
for cl, w in weights.items():
    n = sum(c for p, c in pods.items() if cluster_of.get(p) == cl)
    want = 100 * w / wsum
    got = 100 * n / max(counted, 1)
    ok = abs(got - want) <= tol
    print(f"  {cl:<10} {want:>9.1f}% {got:>9.2f}% {got - want:>+10.2f}  {'ok' if ok else 'OUT OF RANGE'}")
    if not ok:
        problems.append(f"{cl}: {got:.2f}% observed vs {want:.1f}% configured (tolerance ±{tol:g} pp)")
print()
if problems:
    for p in problems:
        print(f"[demo] FAIL: {p}")
    sys.exit(1)
print(f"[demo] OK: every response 2xx; the split is within ±{tol:g} percentage points of the configured weights")
EOF

# ---------------------------------------------------------------- the canary loop
# Act 2: a progressive release of the canary pool, promoted on veer's own
# numbers. Act 3: a release back onto the blue pods, which start failing
# DEMO_FAULT_RATE of requests once the run is at 40%: the controller rolls it
# back. A paced load generator (DEMO_RATE requests/s) runs through both acts
# and logs every response, so the summary can count what users saw.
RATE=${DEMO_RATE:-200}
INTERVAL=${DEMO_INTERVAL:-1s}
FAULT_RATE=${DEMO_FAULT_RATE:-0.05}
ADMIN="http://127.0.0.1:$P_ADMIN"
echo
say "canary loop: $RATE requests/s, analysis every $INTERVAL"
cat >"$LOGS/load.py" <<'EOF'
# paced POSTs over 8 keep-alive connections; one CSV line per response
import http.client, sys, threading, time
port, rate, path = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
out, lock, body = open(path, "w", buffering=1), threading.Lock(), b'{"text":"hello","model":"embed-small-v1"}'
def run(k, n):
    c, t = None, time.time()
    while True:
        t += n / rate
        time.sleep(max(0.0, t - time.time()))
        try:
            c = c or http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("POST", "/api/v1/embed", body, {"content-type": "application/json"})
            r = c.getresponse(); r.read(); st, pod = r.status, r.getheader("x-pod", "-")
        except (OSError, http.client.HTTPException):
            c, st, pod = None, 0, "-"
        with lock:
            out.write("%.3f,%d,%s\n" % (time.time(), st, pod))
ts = [threading.Thread(target=run, args=(k, 8), daemon=True) for k in range(8)]
[t.start() for t in ts]
[t.join() for t in ts]
EOF
start load python3 "$LOGS/load.py" "$P_LISTEN" "$RATE" "$LOGS/load.csv"

python3 - "$ADMIN" "$LOGS/load.csv" "$INTERVAL" "$FAULT_RATE" \
  "127.0.0.1:${POD_PORT[blue-1]}" "127.0.0.1:${POD_PORT[blue-2]}" <<'EOF'
import json, sys, time, urllib.error, urllib.request
admin, csv, interval, fault_rate, blue_pods = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), sys.argv[5:]


def call(method, url, body=None):
    req = urllib.request.Request(url, None if body is None else json.dumps(body).encode(),
                                 {"content-type": "application/json"}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def fault(rate):
    for pod in blue_pods:
        call("POST", "http://%s/fault" % pod, {"error_rate": rate})


def release(title, body, fault_at=None):
    print("[demo] %s" % title, flush=True)
    st, run = call("POST", admin + "/v1/routes/embed/canary", body)
    if st != 200:
        sys.exit("[demo] FAIL: starting the run answered %d: %s" % (st, run))
    t0, last, faulted = time.time(), None, None
    while time.time() - t0 < 25:
        st, run = call("GET", admin + "/v1/routes/embed/canary")
        a = run.get("last_analysis") or {}
        c = a.get("canary") or {}
        w = run["weight"]
        line = "%-11s %s->%s [%-20s] %3d%%  failed checks %d/%d" % (
            run["phase"], run["stable"], run["canary"], "#" * (w // 5), w, run["failed_checks"],
            run["policy"]["threshold"])
        if c.get("requests"):
            line += "  canary %.1f%% ok, P99 %.1f ms, %d req" % (c["success_rate"], c["p99_us"] / 1000, c["requests"])
        if line != last:
            print("[demo]   %5.1fs  %s" % (time.time() - t0, line), flush=True)
            last = line
        if fault_at is not None and faulted is None and w >= fault_at:
            fault(fault_rate)
            faulted = time.time()
            print("[demo]   %5.1fs  >>> the %s pods start failing %.0f%% of requests" %
                  (faulted - t0, run["canary"], 100 * fault_rate), flush=True)
        if run["phase"] in ("succeeded", "rolled_back", "paused"):
            return run, t0, faulted, time.time()
        time.sleep(0.2)
    sys.exit("[demo] FAIL: the run did not finish within 25 s")


policy = {"interval": interval, "step_weight": 20, "max_weight": 60, "threshold": 2, "min_requests": 20,
          "success_rate_min": 99, "p99_max": "500ms", "compare_to_stable": True}
run, t0, _, t1 = release("release 1: the canary pool against blue (20% steps up to 60%, then promotion)",
                         dict(policy, stable="blue", canary="canary"))
if run["phase"] != "succeeded":
    sys.exit("[demo] FAIL: release 1 ended %s, expected succeeded: %s" % (run["phase"], run["reason"]))
promote_s = t1 - t0
print("[demo] promoted in %.1f s: the canary pool is the route's stable pool now" % promote_s, flush=True)
run, t0, faulted, t1 = release("release 2: back onto the blue pods, which go bad at 40%",
                               dict(policy, canary="blue"), fault_at=40)
fault(0)
if run["phase"] != "rolled_back" or faulted is None:
    sys.exit("[demo] FAIL: release 2 ended %s, expected rolled_back after the fault" % run["phase"])
detect_s = t1 - faulted
time.sleep(0.5)
rows = [line.split(",") for line in open(csv).read().split()]
window = [r for r in rows if faulted <= float(r[0]) <= t1]
failed = sum(1 for r in window if not r[1].startswith("2"))
total_failed = sum(1 for r in rows if not r[1].startswith("2"))
print()
print("[demo] summary")
print("  time to promote release 1        %6.1f s" % promote_s)
print("  fault to canary weight 0         %6.1f s (analysis every %s)" % (detect_s, interval))
print("  requests in that time            %6d, failed %d (%.2f%%)" % (len(window), failed,
                                                                       100.0 * failed / max(len(window), 1)))
print("  requests during both releases    %6d, failed %d" % (len(rows), total_failed))
print("[demo] OK: release 1 promoted, release 2 rolled back")
EOF
