#!/usr/bin/env bash
# bench/canary.sh BUILD_DIR [TRIALS] — issue 6's "done when" numbers: how fast a
# progressive canary run is rolled back once its canary goes bad, and how many
# requests failed meanwhile.
#
# One veer in front of two mock pods (blue-1: cluster blue, canary-1: cluster
# canary) under paced load (BENCH_RATE requests/s, every response logged by
# bench/canary.py). Each trial starts a run blue -> canary (interval
# BENCH_INTERVAL, step_weight 10, max_weight 50, threshold 2, min_requests 20,
# success_rate_min 99, confidence default); once the canary's weight reaches
# BENCH_FAULT_AT, canary-1 fails BENCH_FAULT_RATE of its requests. Measured: the
# time from the fault (when the pod took it) to the run's rolled_back event (the
# canary's weight 0, from the run's history), and the requests that completed in
# that time and how many failed. A trial that ends promoted is a miss.
#
# Writes the table to BENCH_OUT [bench/results/canary.md] and prints it; logs and
# the raw trials (trials.jsonl) stay in the printed directory. Exit 0 when every
# trial rolled back after the fault, 1 when some did not, 2 on set-up errors.
#
# Environment: BENCH_RATE [200], BENCH_INTERVAL [1s], BENCH_FAULT_AT [40],
# BENCH_FAULT_RATE [0.05], BENCH_OUT, BENCH_LOG_DIR [a new /tmp/veer-canary.*].
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${1:-build}
case $BUILD_DIR in /*) ;; *) BUILD_DIR=$ROOT/$BUILD_DIR ;; esac
TRIALS=${2:-10}
VEER=${VEER_BIN:-$BUILD_DIR/veer}
MOCKPOD=${VEER_MOCKPOD:-$BUILD_DIR/veer-mockpod}
RATE=${BENCH_RATE:-200}
INTERVAL=${BENCH_INTERVAL:-1s}
FAULT_AT=${BENCH_FAULT_AT:-40}
FAULT_RATE=${BENCH_FAULT_RATE:-0.05}
OUT=${BENCH_OUT:-$ROOT/bench/results/canary.md}
CANARY_PY=$ROOT/bench/canary.py

say() { printf '[canary] %s\n' "$*"; }
die() { printf '[canary] ERROR: %s\n' "$*" >&2; exit 2; }

case $TRIALS in '' | *[!0-9]* | 0) die "TRIALS must be a positive integer, not '$TRIALS'" ;; esac
for tool in python3 curl; do command -v "$tool" >/dev/null 2>&1 || die "'$tool' not found"; done
# shellcheck source=scripts/pods.sh
. "$ROOT/scripts/pods.sh"
use_logs "${BENCH_LOG_DIR:-}" veer-canary

cleanup() {
  local rc=$?
  stop_all
  echo "[canary] logs: $LOGS (veer.log, <pod>.log, load.csv, trials.jsonl)"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start_pods blue-1 canary-1
read -r P_LISTEN P_ADMIN < <(free_ports)
cat >"$LOGS/veer.json" <<EOF
{
  "listeners": [{"name": "http", "address": "127.0.0.1:$P_LISTEN"}],
  "admin": {"address": "127.0.0.1:$P_ADMIN"},
  "clusters": {
    "blue": {"endpoints": ["127.0.0.1:${POD_PORT[blue-1]}"]},
    "canary": {"endpoints": ["127.0.0.1:${POD_PORT[canary-1]}"]}
  },
  "routes": [
    {"name": "embed",
     "match": {"path_prefix": "/api/v1/embed"},
     "split": [{"cluster": "blue", "weight": 100}, {"cluster": "canary", "weight": 0}]}
  ]
}
EOF
start_veer "$LOGS/veer.json" "$P_LISTEN" "$P_ADMIN"
say "$("$VEER" version 2>/dev/null | head -n 1) on 127.0.0.1:$P_LISTEN; pods blue-1 :${POD_PORT[blue-1]}, canary-1 :${POD_PORT[canary-1]}"
start load python3 "$CANARY_PY" load "$P_LISTEN" "$RATE" "$LOGS/load.csv"
sleep 1

POLICY=$(printf '{"stable": "blue", "canary": "canary", "interval": "%s", "step_weight": 10, "max_weight": 50, "promotion_step_weight": 0, "threshold": 2, "min_requests": 20, "max_inconclusive": 10, "success_rate_min": 99, "p99_max": "500ms", "compare_to_stable": true}' "$INTERVAL")
say "$TRIALS trials: $RATE requests/s, interval $INTERVAL, canary fails $FAULT_RATE of requests from weight $FAULT_AT%"
: >"$LOGS/trials.jsonl"
for i in $(seq 1 "$TRIALS"); do
  python3 "$CANARY_PY" release "http://127.0.0.1:$P_ADMIN" embed "$POLICY" --quiet --timeout 90 \
    --fault-at "$FAULT_AT" --fault-rate "$FAULT_RATE" --fault-pod "127.0.0.1:${POD_PORT[canary-1]}" \
    --canary-pod canary-1 --csv "$LOGS/load.csv" --result "$LOGS/trial-$i.json" \
    || { show_log veer; die "trial $i: the run could not be driven"; }
  alive veer || { show_log veer; die "veer died in trial $i"; }
  alive load || { show_log load; die "the load generator died in trial $i"; }
  cat "$LOGS/trial-$i.json" >>"$LOGS/trials.jsonl"
  echo >>"$LOGS/trials.jsonl"
  python3 -c '
import json, sys
t = json.load(open(sys.argv[1]))
det = "%.2f s" % t["detect_s"] if t.get("detect_s") is not None else "-"
print("[canary] trial %s: %s, fault at %s%%, fault -> end %s, %d requests, %d failed" % (
    sys.argv[2], t["phase"], t.get("fault_weight"), det, t.get("window_requests", 0), t.get("window_failed", 0)))
' "$LOGS/trial-$i.json" "$i"
  sleep 1
done

mkdir -p "$(dirname "$OUT")"
{
  python3 "$CANARY_PY" report "$LOGS/trials.jsonl" "# Canary rollback: fault to weight 0"
  echo
  echo "Measured $(date -u +%Y-%m-%dT%H:%MZ) by bench/canary.sh ($TRIALS trials) with $("$VEER" version 2>/dev/null | head -n 1)"
  echo "on $(nproc) CPUs shared with other work: $RATE requests/s paced (bench/canary.py, 8 keep-alive"
  echo "connections), interval $INTERVAL, step_weight 10, max_weight 50, threshold 2, min_requests 20,"
  echo "success_rate_min 99, confidence default; the canary pod fails $FAULT_RATE of its requests from the"
  echo "moment the weight is $FAULT_AT%. \"fault -> weight 0\" runs from the pod taking the fault to the"
  echo "run's rolled_back event; requests and failed count every response that completed in that time."
} >"$OUT"
cat "$OUT"
say "table written to $OUT"
python3 -c '
import json, sys
ts = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
sys.exit(0 if all(t["phase"] == "rolled_back" and t.get("faulted") is not None for t in ts) else 1)
' "$LOGS/trials.jsonl"
