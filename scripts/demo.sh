#!/usr/bin/env bash
# scripts/demo.sh BUILD_DIR — `make demo`: veer in front of three mock embedding
# pods, first splitting traffic 90/10, then running two canary releases.
#
# Pods (free loopback ports): blue-1 (cluster blue, the stable release),
# green-1 (cluster green, the release promoted in act one) and green-2 (cluster
# green-next, act two's release, which goes bad). One route (path_prefix
# /api/v1/embed) splits blue 90 / green 10.
#
# The split: ~5 s of wrk (lua/embed.lua: 2 threads, 20 connections) and a table
# of which pod served how many requests (x-pod header) against the split; every
# response must be 2xx and each share within ±DEMO_TOLERANCE points.
#
# The canary loop (bench/canary.py), under paced load (DEMO_RATE requests/s,
# every response logged): act one rolls green out with 10% steps to 50% and
# promotes it to 100% at once, one progress line per change; act two rolls
# green-next out over green, and green-2 starts failing DEMO_FAULT_RATE of its
# requests once the weight reaches DEMO_FAULT_AT: the controller must roll it
# back. A summary gives the time to promote, the time from the fault to the
# canary's weight 0, the requests in that time and how many failed.
#
# Exits 0 when the split is right, act one was promoted and act two rolled
# back; non-zero otherwise (act two promoted despite the fault says so).
# Logs stay in the printed directory.
#
# Environment: DEMO_DURATION [5s], DEMO_THREADS [2], DEMO_CONNS [20],
# DEMO_TOLERANCE [2], DEMO_RATE [200], DEMO_INTERVAL [1s], DEMO_FAULT_RATE
# [0.03], DEMO_FAULT_AT [30], DEMO_LOG_DIR [a new /tmp/veer-demo.*].
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${1:-build}
case $BUILD_DIR in /*) ;; *) BUILD_DIR=$ROOT/$BUILD_DIR ;; esac
VEER=${VEER_BIN:-$BUILD_DIR/veer}
MOCKPOD=${VEER_MOCKPOD:-$BUILD_DIR/veer-mockpod}
DURATION=${DEMO_DURATION:-5s}
THREADS=${DEMO_THREADS:-2}
CONNS=${DEMO_CONNS:-20}
TOLERANCE=${DEMO_TOLERANCE:-2}
RATE=${DEMO_RATE:-200}
INTERVAL=${DEMO_INTERVAL:-1s}
FAULT_RATE=${DEMO_FAULT_RATE:-0.03}
FAULT_AT=${DEMO_FAULT_AT:-30}
BLUE_WEIGHT=90
GREEN_WEIGHT=10

say() { printf '[demo] %s\n' "$*"; }
die() { printf '[demo] ERROR: %s\n' "$*" >&2; exit 1; }

for tool in python3:python3 curl:curl wrk:wrk; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || die "'${tool%%:*}' not found: apt-get install -y ${tool#*:}"
done
# shellcheck source=scripts/pods.sh
. "$ROOT/scripts/pods.sh"
use_logs "${DEMO_LOG_DIR:-}" veer-demo

cleanup() {
  local rc=$?
  stop_all
  echo "[demo] logs: $LOGS (veer.log, veer.json, <pod>.log, wrk.out, load.csv)"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- mock pods
declare -A POD_CLUSTER=([blue-1]=blue [green-1]=green [green-2]=green-next)
PODS=(blue-1 green-1 green-2)
start_pods "${PODS[@]}"
for pod in "${PODS[@]}"; do
  say "mock pod $pod (cluster ${POD_CLUSTER[$pod]}) on 127.0.0.1:${POD_PORT[$pod]}"
done

# ---------------------------------------------------------------- veer
read -r P_LISTEN P_ADMIN < <(free_ports)
cat >"$LOGS/veer.json" <<EOF
{
  "listeners": [{"name": "http", "address": "127.0.0.1:$P_LISTEN"}],
  "admin": {"address": "127.0.0.1:$P_ADMIN"},
  "state_file": "$LOGS/state.json",
  "access_log": {"path": "$LOGS/access.log"},
  "clusters": {
    "blue": {"endpoints": ["127.0.0.1:${POD_PORT[blue-1]}"]},
    "green": {"endpoints": ["127.0.0.1:${POD_PORT[green-1]}"]},
    "green-next": {"endpoints": ["127.0.0.1:${POD_PORT[green-2]}"]}
  },
  "routes": [
    {"name": "embed",
     "match": {"path_prefix": "/api/v1/embed"},
     "split": [{"cluster": "blue", "weight": $BLUE_WEIGHT}, {"cluster": "green", "weight": $GREEN_WEIGHT}]}
  ]
}
EOF
start_veer "$LOGS/veer.json" "$P_LISTEN" "$P_ADMIN"
say "veer on 127.0.0.1:$P_LISTEN (admin 127.0.0.1:$P_ADMIN): route embed, blue $BLUE_WEIGHT / green $GREEN_WEIGHT"
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
python3 - "$LOGS/wrk.out" "$pod_map" "blue=$BLUE_WEIGHT,green=$GREEN_WEIGHT" "$TOLERANCE" <<'EOF'
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
ADMIN="http://127.0.0.1:$P_ADMIN"
CANARY_PY=$ROOT/bench/canary.py
echo
say "canary loop: $RATE requests/s paced (every response logged in load.csv), analysis every $INTERVAL"
start load python3 "$CANARY_PY" load "$P_LISTEN" "$RATE" "$LOGS/load.csv"
# The run's policy: 10% steps to 50%, then 100% at once; two failed analyses
# roll back. max_inconclusive is raised because at 10% of 200 requests/s an
# interval holds about min_requests canary requests, so some are inconclusive.
policy() { # policy STABLE CANARY
  printf '{"stable": "%s", "canary": "%s", "interval": "%s", "step_weight": 10, "max_weight": 50, "promotion_step_weight": 0, "threshold": 2, "min_requests": 20, "max_inconclusive": 10, "success_rate_min": 99, "p99_max": "500ms", "compare_to_stable": true}' \
    "$1" "$2" "$INTERVAL"
}
field() { python3 -c 'import json, sys; v = json.load(open(sys.argv[1])).get(sys.argv[2]); print("" if v is None else v)' "$@"; }

say "act one: green (green-1) replaces blue, 10% steps to 50%, then promotion to 100%"
python3 "$CANARY_PY" release "$ADMIN" embed "$(policy blue green)" --result "$LOGS/act1.json" \
  || { show_log veer; die "act one: the run could not be driven"; }
alive veer || { show_log veer; die "veer died during act one"; }
[ "$(field "$LOGS/act1.json" phase)" = succeeded ] \
  || die "act one ended $(field "$LOGS/act1.json" phase) ($(field "$LOGS/act1.json" reason)), expected succeeded"
say "promoted in $(printf '%.1f' "$(field "$LOGS/act1.json" run_s)") s: green is the route's stable cluster now"

echo
say "act two: green-next (green-2) replaces green; green-2 starts failing $(python3 -c "print('%g' % (100 * $FAULT_RATE))")% of requests at ${FAULT_AT}%"
python3 "$CANARY_PY" release "$ADMIN" embed "$(policy green green-next)" --result "$LOGS/act2.json" \
  --fault-at "$FAULT_AT" --fault-rate "$FAULT_RATE" --fault-pod "127.0.0.1:${POD_PORT[green-2]}" \
  --canary-pod green-2 --csv "$LOGS/load.csv" \
  || { show_log veer; die "act two: the run could not be driven"; }
alive veer || { show_log veer; die "veer died during act two"; }
alive load || { show_log load; die "the load generator died"; }
say "the run as the operator sees it: veer ctl --admin 127.0.0.1:$P_ADMIN canary embed status"
"$VEER" ctl --admin "127.0.0.1:$P_ADMIN" canary embed status 2>&1 | sed 's/^/  /' || true

python3 - "$LOGS/act1.json" "$LOGS/act2.json" "$LOGS/load.csv" "$INTERVAL" "$RATE" <<'EOF'
import json, sys
act1, act2 = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
csv, interval, rate = sys.argv[3], sys.argv[4], sys.argv[5]
rows = [l.split(",") for l in open(csv).read().split()]
rows = [r for r in rows if len(r) == 3 and act1["started"] <= float(r[0]) <= act2["ended"]]
failed = sum(1 for r in rows if not r[1].startswith("2"))
print()
print("[demo] summary (%s requests/s, analysis every %s)" % (rate, interval))
print("  act one: time to promote            %6.1f s" % act1["run_s"])
if act2.get("faulted") is not None:
    what = "fault to canary weight 0 " if act2["phase"] == "rolled_back" else "fault to the run's end  "
    print("  act two: %s  %6.1f s (fault at %s%%, %s)" % (
        what, act2["detect_s"], act2.get("fault_weight"), act2["phase"].replace("_", " ")))
    print("  act two: requests in that time      %6d, failed %d (%.2f%%), %d of them to green-2" % (
        act2["window_requests"], act2["window_failed"],
        100.0 * act2["window_failed"] / max(act2["window_requests"], 1), act2["window_canary_requests"]))
print("  both acts: requests                 %6d, failed %d (%.3f%%)" % (len(rows), failed,
                                                                        100.0 * failed / max(len(rows), 1)))
if act2["phase"] == "succeeded":
    sys.exit("[demo] FAIL: act two was PROMOTED despite green-2 failing requests (the analysis missed it)")
if act2["phase"] != "rolled_back" or act2.get("faulted") is None:
    sys.exit("[demo] FAIL: act two ended %s (%s)%s, expected rolled back after the fault" % (
        act2["phase"], act2.get("reason"), "" if act2.get("faulted") else " before the fault"))
print("[demo] OK: act one promoted, act two rolled back")
EOF
