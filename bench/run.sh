#!/usr/bin/env bash
# bench/run.sh [BUILD_DIR] — proxy benchmark: veer vs HAProxy vs nginx over
# HTTP/1.1, h2c (prior knowledge) and TLS (HTTP/1.1 and h2 by ALPN).
#
# One nginx serves a fixed 4 KB JSON body over HTTP/1.1; HAProxy, nginx (as a
# proxy) and veer, each with one worker/thread and upstream keep-alive, sit in
# front of it. For every proxy, in the same run and interleaved: CPU per request
# (utime+stime of the proxy's processes around an exact request count) and
# closed-loop throughput for every downstream protocol, plus open-loop latency
# (P50/P99) at one fixed rate for HTTP/1.1. See bench/README.md for how to read
# the numbers. This is a benchmark, not a test: it fails only when a tool is
# missing, a proxy does not come up, or a response is not 2xx.
#
# Environment (defaults in brackets):
#   BENCH_PROTOCOLS [h1,h2c,tls-h1,tls-h2]  downstream protocols to measure:
#                               h1 (plain HTTP/1.1: CPU, throughput, wrk, latency),
#                               h2c (prior knowledge), tls-h1 (https, ALPN
#                               http/1.1), tls-h2 (https, ALPN h2)
#   BENCH_STREAMS [10]          concurrent streams per connection for h2c/tls-h2 (h2load -m)
#   BENCH_TLS13_CIPHERS [TLS_AES_128_GCM_SHA256]  the TLS 1.3 suites h2load offers (so
#                               every proxy negotiates the same one)
#   BENCH_ROUNDS [3]            rounds; medians are reported
#   BENCH_REQUESTS [200000]     requests per closed-loop run (h2load -n)
#   BENCH_CONNS [50]            connections for the closed-loop runs
#   BENCH_WRK_DURATION [5s]     wrk cross-check of CPU/req per round; 0 disables
#   BENCH_LAT_CONNS [20]        connections for the open-loop runs
#   BENCH_LAT_DURATION [10s]    open-loop measuring time (after BENCH_LAT_WARMUP [2s])
#   BENCH_RPS []                open-loop total rate; default BENCH_RPS_FRACTION [0.5]
#                               x the weakest proxy's median closed-loop req/s
#   BENCH_SKIP_VEER [0]         1: leave veer out
#   BENCH_VEER_FULL [0]         1: veer with the access log to a file, a health check and
#                               outlier detection on the benched cluster (issues 4, 5)
#   BENCH_REQUIRE_VEER [0]      1: fail (instead of skipping veer) when veer is
#                               missing, does not become ready, or cannot serve
#                               one of the protocols
#   BENCH_PIN [auto]            1: backend + load generator on CPU 0, proxy on CPU 1
#                               (auto: 1 with >= 2 CPUs and taskset); 0: no pinning
#   BENCH_KEEP [0]              1: keep the temp dir (configs, logs) afterwards
#   BENCH_BODY_BYTES [4096]     response body size
#   BENCH_RESULTS_DIR [bench/results]
#   VEER_BIN [BUILD_DIR/veer]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/procs.sh
. "$ROOT/scripts/procs.sh"
BUILD_DIR=${1:-build-release}
case $BUILD_DIR in /*) ;; *) BUILD_DIR=$ROOT/$BUILD_DIR ;; esac
VEER_BIN=${VEER_BIN:-$BUILD_DIR/veer}
REPORT="python3 $ROOT/bench/report.py"

ROUNDS=${BENCH_ROUNDS:-3}
REQUESTS=${BENCH_REQUESTS:-200000}
CONNS=${BENCH_CONNS:-50}
WRK_DURATION=${BENCH_WRK_DURATION:-5s}
LAT_CONNS=${BENCH_LAT_CONNS:-20}
LAT_DURATION=${BENCH_LAT_DURATION:-10s}
LAT_WARMUP=${BENCH_LAT_WARMUP:-2s}
RPS_FRACTION=${BENCH_RPS_FRACTION:-0.5}
BODY_BYTES=${BENCH_BODY_BYTES:-4096}
PIN=${BENCH_PIN:-auto}
if [ "$PIN" = auto ]; then
  if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null 2>&1; then PIN=1; else PIN=0; fi
fi
RESULTS_DIR=${BENCH_RESULTS_DIR:-$ROOT/bench/results}
REQ_PATH=/api/v1/embed
STREAMS=${BENCH_STREAMS:-10}
TLS13_CIPHERS=${BENCH_TLS13_CIPHERS:-TLS_AES_128_GCM_SHA256}
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# The protocols in a fixed order (the report's order), whatever order the knob
# lists them in; a typo is an error rather than a silently shorter run.
declare -A WANT=()
IFS=', ' read -r -a _protos <<<"${BENCH_PROTOCOLS:-h1,h2c,tls-h1,tls-h2}"
for p in "${_protos[@]}"; do
  case $p in
    h1 | h2c | tls-h1 | tls-h2) WANT[$p]=1 ;;
    "") ;;
    *) echo "bench: unknown protocol '$p' in BENCH_PROTOCOLS (use h1, h2c, tls-h1, tls-h2)" >&2; exit 2 ;;
  esac
done
PROTOCOLS=()
for p in h1 h2c tls-h1 tls-h2; do [ -n "${WANT[$p]:-}" ] && PROTOCOLS+=("$p"); done
[ ${#PROTOCOLS[@]} -gt 0 ] || { echo "bench: BENCH_PROTOCOLS selects no protocol" >&2; exit 2; }
H2_PROTOCOLS=() # the rows measured by the h2load phase below (everything but h1)
for p in "${PROTOCOLS[@]}"; do [ "$p" != h1 ] && H2_PROTOCOLS+=("$p"); done
want() { [ -n "${WANT[$1]:-}" ]; }
want_tls() { want tls-h1 || want tls-h2; }

# ---------------------------------------------------------------- tools
export PATH=$PATH:/usr/sbin:/sbin
need() { # need BINARY DEBIAN_PACKAGE
  command -v "$1" >/dev/null 2>&1 && return 0
  echo "bench: '$1' not found. Install it: apt-get install -y $2" >&2
  exit 2
}
need python3 python3
need curl curl
need nginx nginx-light
need haproxy haproxy
need h2load nghttp2-client
need cc build-essential
want_tls && need openssl openssl
if [ ${#H2_PROTOCOLS[@]} -gt 0 ] && ! curl -V 2>/dev/null | grep -q 'HTTP2'; then
  echo "bench: this curl has no HTTP/2 support (needed to probe the h2 listeners): apt-get install -y curl" >&2
  exit 2
fi
if ! want h1; then WRK_DURATION=0; fi
if [ "$WRK_DURATION" != 0 ] && ! command -v wrk >/dev/null 2>&1; then
  log "wrk not found (apt-get install -y wrk): skipping the wrk cross-check"
  WRK_DURATION=0
fi
if [ "$PIN" = 1 ]; then
  need taskset util-linux
  [ "$(nproc)" -ge 2 ] || { echo "bench: BENCH_PIN=1 needs 2 CPUs" >&2; exit 2; }
  PIN_BACKEND="taskset -c 0"; PIN_PROXY="taskset -c 1"; PIN_LOAD="taskset -c 0"
else
  PIN_BACKEND=""; PIN_PROXY=""; PIN_LOAD=""
fi
CLK_TCK=$(getconf CLK_TCK)

# ---------------------------------------------------------------- processes
WORK=$(mktemp -d "${TMPDIR:-/tmp}/veer-bench.XXXXXX")
OLOAD=$WORK/oload # the open-loop load generator (see its header for why not h2load --rps)
declare -A PID=()
FAILED=0

cleanup() {
  local rc=$?
  stop_all
  if [ "$rc" != 0 ] || [ "$FAILED" = 1 ] || [ "${BENCH_KEEP:-0}" = 1 ]; then
    echo "bench: configs and logs kept in $WORK" >&2
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fail() {
  FAILED=1
  echo "bench: FAILED: $*" >&2
  exit 1
}

cc -O2 -o "$OLOAD" "$ROOT/bench/oload.c" -lm || fail "cannot build bench/oload.c"

show_log() { # show_log NAME: last lines of a process log
  [ -s "$WORK/$1.log" ] || return 0
  echo "---- last lines of $WORK/$1.log" >&2
  tail -n 20 "$WORK/$1.log" >&2
  echo "----" >&2
}

start() { # start NAME CMD... — in its own session (so its whole group can be killed)
  local name=$1; shift
  setsid "$@" >"$WORK/$name.log" 2>&1 </dev/null &
  PID[$name]=$!
}

stop() { # stop NAME
  local p=${PID[$1]:-}
  [ -n "$p" ] || return 0
  kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null || true
  for _ in $(seq 1 30); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -KILL -- "-$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
  unset "PID[$1]"
}

alive() { local p=${PID[$1]:-}; [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }

http_code() { curl -s -o /dev/null -m 2 -w '%{http_code}' "$1" 2>/dev/null || true; }

wait_ready() { # wait_ready NAME URL TIMEOUT_S — 0 once URL answers 200
  local name=$1 url=$2 timeout=$3 i
  for i in $(seq 1 $((timeout * 10))); do
    alive "$name" || { log "$name exited during start-up"; return 1; }
    [ "$(http_code "$url")" = 200 ] && return 0
    sleep 0.1
  done
  log "$name: $url did not answer 200 within ${timeout}s"
  return 1
}

descendants() { # descendants PID: PID and all its descendants
  local p c
  for p in "$@"; do
    echo "$p"
    for c in $(pgrep -P "$p" 2>/dev/null || true); do descendants "$c"; done
  done
}

cpu_ticks() { # cpu_ticks NAME: utime+stime (clock ticks) of the process tree
  local total=0 p v
  for p in $(descendants "${PID[$1]}"); do
    # fields after "(comm)": state is $1, utime is $12, stime is $13
    v=$(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$p/stat" 2>/dev/null || echo 0)
    total=$((total + v))
  done
  echo "$total"
}

rss_kb() { # rss_kb NAME: VmRSS (kB) of the process tree
  local total=0 p v
  for p in $(descendants "${PID[$1]}"); do
    v=$(awk '/^VmRSS:/ { print $2 }' "/proc/$p/status" 2>/dev/null || echo 0)
    total=$((total + ${v:-0}))
  done
  echo "$total"
}

# ---------------------------------------------------------------- ports & configs
read -r P_BACKEND P_HAPROXY P_NGINX P_VEER P_ADMIN P_HAPROXY_H2C P_NGINX_H2C P_HAPROXY_TLS \
  P_NGINX_TLS P_VEER_TLS < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(10)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))')

declare -A PORT=([direct]=$P_BACKEND [haproxy]=$P_HAPROXY [nginx]=$P_NGINX [veer]=$P_VEER)
# veer's plain listener takes h2c on the same port (the connection preface
# decides); HAProxy and nginx 1.22 need a listener of their own for it.
declare -A PORT_H2C=([haproxy]=$P_HAPROXY_H2C [nginx]=$P_NGINX_H2C [veer]=$P_VEER)
declare -A PORT_TLS=([haproxy]=$P_HAPROXY_TLS [nginx]=$P_NGINX_TLS [veer]=$P_VEER_TLS)
USER_LINE=""
[ "$(id -u)" = 0 ] && USER_LINE="user root;"

mkdir -p "$WORK/backend/www" "$WORK/nginx-proxy"
python3 - "$WORK/backend/www/body.json" "$BODY_BYTES" <<'EOF'
import json, random, sys
path, size = sys.argv[1], int(sys.argv[2])
rng = random.Random(42)
doc = {"model": "embed-small-v1", "pod": "bench-backend", "embedding": [], "pad": ""}
while len(json.dumps(doc)) < size:
    doc["embedding"].append(round(rng.uniform(-1, 1), 6))
while len(json.dumps(doc)) > size:
    doc["embedding"].pop()
doc["pad"] = "x" * (size - len(json.dumps(doc)))
text = json.dumps(doc)
assert len(text) == size, (len(text), size)
open(path, "w").write(text)
EOF

cat >"$WORK/backend/nginx.conf" <<EOF
$USER_LINE
worker_processes 1;
events { worker_connections 4096; }
http {
  access_log off;
  default_type application/json;
  keepalive_requests 1000000;
  keepalive_timeout 300s;
  open_file_cache max=16;
  client_body_temp_path $WORK/backend/tmp;
  server {
    listen 127.0.0.1:$P_BACKEND backlog=4096;
    location / { root $WORK/backend/www; try_files /body.json =500; }
  }
}
EOF

# One self-signed ECDSA P-256 certificate for every TLS listener, so the three
# proxies do the same handshake and record crypto.
HAPROXY_BINDS="" NGINX_LISTENS="" NGINX_TLS="" VEER_TLS_LISTENER=""
if want h2c; then
  HAPROXY_BINDS+="  bind 127.0.0.1:$P_HAPROXY_H2C proto h2"$'\n'
  NGINX_LISTENS+="    listen 127.0.0.1:$P_NGINX_H2C http2 backlog=4096;"$'\n'
fi
if want_tls; then
  mkdir -p "$WORK/tls"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$WORK/tls/key.pem" -out "$WORK/tls/cert.pem" >"$WORK/openssl.log" 2>&1 ||
    { show_log openssl; fail "openssl could not generate the bench certificate"; }
  cat "$WORK/tls/cert.pem" "$WORK/tls/key.pem" >"$WORK/tls/haproxy.pem"
  HAPROXY_BINDS+="  bind 127.0.0.1:$P_HAPROXY_TLS ssl crt $WORK/tls/haproxy.pem alpn h2,http/1.1"$'\n'
  NGINX_LISTENS+="    listen 127.0.0.1:$P_NGINX_TLS ssl http2 backlog=4096;"$'\n'
  # nginx 1.22 leaves TLS 1.3 off unless asked; the others offer 1.2 and 1.3
  NGINX_TLS="    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_certificate $WORK/tls/cert.pem;
    ssl_certificate_key $WORK/tls/key.pem;"
  VEER_TLS_LISTENER=",
   {\"name\": \"https\", \"address\": \"127.0.0.1:$P_VEER_TLS\",
    \"tls\": {\"cert\": \"$WORK/tls/cert.pem\", \"key\": \"$WORK/tls/key.pem\", \"alpn\": [\"h2\", \"http/1.1\"]}}"
fi

cat >"$WORK/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  option http-keep-alive
  http-reuse always
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 60s
frontend fe
  bind 127.0.0.1:$P_HAPROXY
$HAPROXY_BINDS  default_backend be
backend be
  server s1 127.0.0.1:$P_BACKEND
EOF

cat >"$WORK/nginx-proxy/nginx.conf" <<EOF
$USER_LINE
worker_processes 1;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 300s;
  client_body_temp_path $WORK/nginx-proxy/client_tmp;
  proxy_temp_path $WORK/nginx-proxy/proxy_tmp;
  upstream be {
    server 127.0.0.1:$P_BACKEND;
    keepalive 1024;  # as many idle upstream connections as HAProxy (unbounded) and veer (1024) keep
    keepalive_requests 1000000;
    keepalive_timeout 300s;
  }
  server {
    listen 127.0.0.1:$P_NGINX backlog=4096;
$NGINX_LISTENS$NGINX_TLS
    location / {
      proxy_pass http://be;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF

# BENCH_VEER_FULL=1: veer with everything a production ingress turns on: the
# access log to a file, an active health check and outlier detection on the
# benched cluster (stats histograms and circuit breakers are always on).
VEER_ACCESS_LOG=null
VEER_CLUSTER_EXTRA=""
VEER_FEATURES="defaults (access log off; stats histograms and circuit breakers on)"
if [ "${BENCH_VEER_FULL:-0}" = 1 ]; then
  VEER_ACCESS_LOG="\"$WORK/veer-access.log\""
  VEER_CLUSTER_EXTRA=', "health_check": {"path": "'"$REQ_PATH"'", "interval": "1s", "timeout": "500ms"}, "outlier_detection": {"consecutive_5xx": 5, "interval": "1s", "latency_p99_max": "1s"}'
  VEER_FEATURES="BENCH_VEER_FULL=1: access log to a file, health check every 1 s, outlier detection (incl. latency), stats histograms, circuit breakers"
fi
cat >"$WORK/veer.json" <<EOF
{"workers": 1,
 "listeners": [{"name": "http", "address": "127.0.0.1:$P_VEER"}$VEER_TLS_LISTENER],
 "admin": {"address": "127.0.0.1:$P_ADMIN"},
 "state_file": "$WORK/veer-state.json",
 "access_log": {"path": $VEER_ACCESS_LOG},
 "clusters": {"backend": {"endpoints": ["127.0.0.1:$P_BACKEND"], "lb": "round_robin"$VEER_CLUSTER_EXTRA}},
 "routes": [{"name": "all", "split": [{"cluster": "backend", "weight": 100}]}]}
EOF

nginx_cmd() { # nginx_cmd DIR
  echo nginx -e stderr -p "$1" -c "$1/nginx.conf" -g "daemon off; pid $1/nginx.pid; error_log stderr;"
}

# ---------------------------------------------------------------- start
log "work dir $WORK; ports: backend $P_BACKEND haproxy $P_HAPROXY nginx $P_NGINX veer $P_VEER (admin $P_ADMIN)"
declare -A SKIPPED=()

# shellcheck disable=SC2046
start backend $PIN_BACKEND nginx -e stderr -p "$WORK/backend" -c "$WORK/backend/nginx.conf" \
  -g "daemon off; pid $WORK/backend/nginx.pid; error_log stderr;"
wait_ready backend "http://127.0.0.1:$P_BACKEND$REQ_PATH" 10 || { show_log backend; fail "backend nginx did not start"; }
got=$(curl -s "http://127.0.0.1:$P_BACKEND$REQ_PATH" | wc -c)
[ "$got" = "$BODY_BYTES" ] || fail "backend serves $got bytes, expected $BODY_BYTES"

start haproxy $PIN_PROXY haproxy -f "$WORK/haproxy.cfg" -db
wait_ready haproxy "http://127.0.0.1:$P_HAPROXY$REQ_PATH" 10 || { show_log haproxy; fail "haproxy did not start"; }

start nginx $PIN_PROXY nginx -e stderr -p "$WORK/nginx-proxy" -c "$WORK/nginx-proxy/nginx.conf" \
  -g "daemon off; pid $WORK/nginx-proxy/nginx.pid; error_log stderr;"
wait_ready nginx "http://127.0.0.1:$P_NGINX$REQ_PATH" 10 || { show_log nginx; fail "nginx (proxy) did not start"; }

skip_veer() {
  if [ "${BENCH_REQUIRE_VEER:-0}" = 1 ]; then fail "veer: $1"; fi
  log "SKIPPING veer: $1"
  SKIPPED[veer]=$1
}
VEER_VERSION="-"
if [ "${BENCH_SKIP_VEER:-0}" = 1 ]; then
  skip_veer "BENCH_SKIP_VEER=1"
elif [ ! -x "$VEER_BIN" ]; then
  skip_veer "no binary at $VEER_BIN (make build-release)"
else
  VEER_VERSION=$(timeout 5 "$VEER_BIN" version 2>/dev/null | head -n 1 || true)
  [ -n "$VEER_VERSION" ] || VEER_VERSION="?"
  if ! timeout 10 "$VEER_BIN" check -c "$WORK/veer.json" >"$WORK/veer-check.log" 2>&1; then
    show_log veer-check
    skip_veer "'veer check -c veer.json' failed (config in $WORK/veer.json)"
  else
    start veer $PIN_PROXY "$VEER_BIN" run -c "$WORK/veer.json"
    if ! wait_ready veer "http://127.0.0.1:$P_ADMIN/readyz" "${BENCH_VEER_READY_TIMEOUT:-10}"; then
      show_log veer; stop veer; skip_veer "not ready (admin /readyz never answered 200)"
    else
      ok=0
      for _ in $(seq 1 50); do
        [ "$(http_code "http://127.0.0.1:$P_VEER$REQ_PATH")" = 200 ] && { ok=1; break; }
        sleep 0.1
      done
      if [ "$ok" != 1 ]; then
        code=$(http_code "http://127.0.0.1:$P_VEER$REQ_PATH")
        show_log veer; stop veer; skip_veer "ready, but a proxied request answered '$code' instead of 200"
      else
        got=$(curl -s -m 5 "http://127.0.0.1:$P_VEER$REQ_PATH" | wc -c)
        if [ "$got" != "$BODY_BYTES" ]; then
          show_log veer; stop veer; skip_veer "proxied body is $got bytes, expected $BODY_BYTES"
        fi
      fi
    fi
  fi
fi

TARGETS=(haproxy nginx)
[ -z "${SKIPPED[veer]:-}" ] && TARGETS+=(veer)

RAW=$WORK/raw.tsv
: >"$RAW"
record() { printf '%s\t%s\t%s\t%s\t%s\n' "$@" >>"$RAW"; }

if [ -z "${SKIPPED[veer]:-}" ]; then
  sleep 1
  record mem 1 veer rss_idle_kb "$(rss_kb veer)"
fi

url() { echo "http://127.0.0.1:${PORT[$1]}$REQ_PATH"; }

check_alive() {
  local t
  for t in backend "${TARGETS[@]}"; do
    alive "$t" || { show_log "$t"; fail "$t died during the run"; }
  done
}

rotate() { # rotate ROUND ITEMS...: the items, starting at offset ROUND-1
  local r=$1; shift
  local n=$# i
  local items=("$@")
  for ((i = 0; i < n; i++)); do echo "${items[$(((i + r - 1) % n))]}"; done
}

secs() { # "10s" / "500ms" / "1m" -> seconds
  python3 -c "
import re, sys; m = re.fullmatch(r'([\d.]+)(ms|s|m)?', sys.argv[1]); v = float(m.group(1))
print(v / 1000 if m.group(2) == 'ms' else v * 60 if m.group(2) == 'm' else v)" "$1"
}

NOTES=()
RATE=0 RPS_PER_CONN=0 RATE_NOTE="-" # the open loop is part of the h1 rows only
# ================================================================ h1 rows
if want h1; then
  # warm-up: fill the upstream pools, fault in the code paths
  for t in direct "${TARGETS[@]}"; do
    $PIN_LOAD h2load --h1 -n 20000 -c "$CONNS" -t 1 "$(url "$t")" >"$WORK/warmup-$t.out" 2>&1 || true
    $REPORT h2load "$WORK/warmup-$t.out" 20000 >"$WORK/warmup-$t.parsed" ||
      { show_log "${t/direct/backend}"; fail "$t warm-up: $(cat "$WORK/warmup-$t.parsed")"; }
  done
  check_alive

# ---------------------------------------------------------------- phase 1: closed loop
  for r in $(seq 1 "$ROUNDS"); do
    for t in $(rotate "$r" direct "${TARGETS[@]}"); do
      out=$WORK/closed-$r-$t.out
      [ "$t" != direct ] && before=$(cpu_ticks "$t")
      $PIN_LOAD h2load --h1 -n "$REQUESTS" -c "$CONNS" -t 1 "$(url "$t")" >"$out" 2>&1 || true
      [ "$t" != direct ] && after=$(cpu_ticks "$t")
      if ! parsed=$($REPORT h2load "$out" "$REQUESTS"); then
        check_alive; fail "$t closed-loop run $r: $parsed (see $out)"
      fi
      read -r rps done_n <<<"$parsed"
      record closed "$r" "$t" rps "$rps"
      if [ "$t" != direct ]; then
        cpu=$(python3 -c "print(($after - $before) / $CLK_TCK / $done_n * 1e6)")
        record closed "$r" "$t" cpu_us "$cpu"
        log "round $r $t: $(printf '%.0f' "$rps") req/s, $(printf '%.2f' "$cpu") µs CPU/req ($((after - before)) ticks)"
      else
        log "round $r direct: $(printf '%.0f' "$rps") req/s"
      fi
      if [ "$WRK_DURATION" != 0 ] && [ "$t" != direct ]; then
        out=$WORK/wrk-$r-$t.out
        before=$(cpu_ticks "$t")
        $PIN_LOAD wrk -t1 -c"$CONNS" -d"$WRK_DURATION" "$(url "$t")" >"$out" 2>&1 || true
        after=$(cpu_ticks "$t")
        if ! parsed=$($REPORT wrk "$out"); then
          check_alive; fail "$t wrk run $r: $parsed (see $out)"
        fi
        read -r n wrps <<<"$parsed"
        cpu=$(python3 -c "print(($after - $before) / $CLK_TCK / $n * 1e6)")
        record wrk "$r" "$t" cpu_us "$cpu"
        record wrk "$r" "$t" rps "$wrps"
        log "round $r $t (wrk): $(printf '%.0f' "$wrps") req/s, $(printf '%.2f' "$cpu") µs CPU/req"
      fi
    done
    check_alive
  done

# ---------------------------------------------------------------- phase 2: open loop
  if [ -n "${BENCH_RPS:-}" ]; then
    RATE=$BENCH_RPS
    RATE_NOTE="BENCH_RPS"
  else
    weakest=$($REPORT minrps "$RAW" "${TARGETS[@]}")
    RATE=$(python3 -c "print(round($RPS_FRACTION * $weakest))")
    RATE_NOTE="$RPS_FRACTION x the weakest proxy's median closed-loop req/s"
  fi
  RPS_PER_CONN=$(python3 -c "print(round($RATE / $LAT_CONNS, 2))")
  log "open loop at $RATE req/s over $LAT_CONNS connections (bench/oload.c: fixed schedule, latency from the due time)"
  lat_secs=$(secs "$LAT_DURATION")
  lat_warm=$(secs "$LAT_WARMUP")
  for r in $(seq 1 "$ROUNDS"); do
    for t in $(rotate "$r" direct "${TARGETS[@]}"); do
      out=$WORK/lat-$r-$t.out
      $PIN_LOAD "$OLOAD" -a 127.0.0.1 -p "${PORT[$t]}" -u "$REQ_PATH" -c "$LAT_CONNS" -r "$RATE" \
        -d "$lat_secs" -w "$lat_warm" >"$out" 2>&1 || true
      p50=$(awk '$1 == "p50_us" {print $2}' "$out"); p99=$(awk '$1 == "p99_us" {print $2}' "$out")
      achieved=$(awk '$1 == "achieved_rps" {print $2}' "$out")
      bad=$(awk '$1 == "non_2xx" || $1 == "errors" || $1 == "timeouts" {n += $2} END {print n + 0}' "$out")
      if [ -z "$p99" ] || [ -z "$achieved" ] || [ "$bad" != 0 ]; then
        check_alive; fail "$t open-loop run $r: $bad failed requests or no result (see $out)"
      fi
      record lat "$r" "$t" p50_us "$p50"
      record lat "$r" "$t" p99_us "$p99"
      record lat "$r" "$t" rate "$achieved"
      if python3 -c "import sys; sys.exit(0 if $achieved < 0.95 * $RATE else 1)"; then
        NOTES+=("round $r $t: open loop achieved only $(printf '%.0f' "$achieved") of $RATE req/s (it could not keep up: its latency is understated)")
      fi
      log "round $r $t: P50 ${p50} µs, P99 ${p99} µs ($(printf '%.0f' "$achieved") req/s)"
    done
    check_alive
  done
fi

# ================================================================ h2c, tls-h1, tls-h2 rows
# Same backend and proxies; only the downstream side changes. Each row is an
# exact number of requests from h2load (one thread, -c CONNS; -m STREAMS on
# HTTP/2), CPU from /proc as above. There is no direct row: the backend speaks
# HTTP/1.1 only, and the point is the proxies' cost for the same work.
declare -A PSKIP=() # "PROTO veer" -> why veer has no row for PROTO

purl() { # purl PROTO TARGET
  case $1 in
    h2c) echo "http://127.0.0.1:${PORT_H2C[$2]}$REQ_PATH" ;;
    *) echo "https://127.0.0.1:${PORT_TLS[$2]}$REQ_PATH" ;;
  esac
}

h2load_args() { # h2load_args PROTO: the flags that select the protocol (and TLS suite)
  case $1 in
    h2c) echo "-m $STREAMS" ;;
    tls-h1) echo "--h1 --tls13-ciphers=$TLS13_CIPHERS" ;;
    tls-h2) echo "-m $STREAMS --tls13-ciphers=$TLS13_CIPHERS" ;;
  esac
}
declare -A TLSNEG=() # "PROTO TARGET" -> the TLS version and cipher h2load reported

alpn_of() { # alpn_of PROTO: the application protocol h2load must report
  case $1 in
    tls-h1) echo "http/1.1" ;;
    *) echo "h2" ;;
  esac
}

probe() { # probe PROTO TARGET: "" when one request over PROTO gets 200 and the full body
  local proto=$1 t=$2 flags want_v got code v size
  case $proto in
    h2c) flags="--http2-prior-knowledge"; want_v=2 ;;
    tls-h1) flags="-k --http1.1"; want_v=1.1 ;;
    tls-h2) flags="-k --http2"; want_v=2 ;;
  esac
  for _ in $(seq 1 30); do
    : >"$WORK/probe.body"
    # shellcheck disable=SC2086
    got=$(curl -s -m 5 $flags -o "$WORK/probe.body" -w '%{http_code} %{http_version}' \
      "$(purl "$proto" "$t")" 2>/dev/null || true)
    read -r code v <<<"$got"
    size=$(wc -c <"$WORK/probe.body" 2>/dev/null || echo 0)
    if [ "$code" = 200 ] && [ "$v" = "$want_v" ] && [ "$size" = "$BODY_BYTES" ]; then
      echo ""
      return 0
    fi
    sleep 0.1
  done
  echo "$proto probe answered '${code:-no response}' over HTTP/${v:-?} with $size body bytes (want 200 over HTTP/$want_v with $BODY_BYTES)"
}

h2_targets() { # h2_targets PROTO: the targets with a row for PROTO
  local t
  for t in "${TARGETS[@]}"; do [ -z "${PSKIP[$1 $t]:-}" ] && echo "$t"; done
  return 0
}

for proto in "${H2_PROTOCOLS[@]}"; do
  for t in "${TARGETS[@]}"; do
    why=$(probe "$proto" "$t")
    [ -z "$why" ] && continue
    if [ "$t" != veer ] || [ "${BENCH_REQUIRE_VEER:-0}" = 1 ]; then
      show_log "$t"; fail "$t: $why"
    fi
    log "SKIPPING veer for $proto: $why"
    PSKIP["$proto veer"]=$why
  done
  mapfile -t ptargets < <(h2_targets "$proto")
  # shellcheck disable=SC2046
  for t in "${ptargets[@]}"; do
    out=$WORK/warmup-$proto-$t.out
    $PIN_LOAD h2load $(h2load_args "$proto") -n 20000 -c "$CONNS" -t 1 "$(purl "$proto" "$t")" >"$out" 2>&1 || true
    parsed=$($REPORT h2load "$out" 20000 "$(alpn_of "$proto")") ||
      { show_log "$t"; fail "$t $proto warm-up: $parsed (see $out)"; }
  done
  check_alive
  for r in $(seq 1 "$ROUNDS"); do
    for t in $(rotate "$r" "${ptargets[@]}"); do
      out=$WORK/$proto-$r-$t.out
      before=$(cpu_ticks "$t")
      # shellcheck disable=SC2046
      $PIN_LOAD h2load $(h2load_args "$proto") -n "$REQUESTS" -c "$CONNS" -t 1 "$(purl "$proto" "$t")" >"$out" 2>&1 || true
      after=$(cpu_ticks "$t")
      if ! parsed=$($REPORT h2load "$out" "$REQUESTS" "$(alpn_of "$proto")"); then
        check_alive; fail "$t $proto run $r: $parsed (see $out)"
      fi
      read -r rps done_n <<<"$parsed"
      cpu=$(python3 -c "print(($after - $before) / $CLK_TCK / $done_n * 1e6)")
      if [ "$proto" != h2c ]; then
        TLSNEG["$proto $t"]=$(awk -F': ' '$1 == "TLS Protocol" { v = $2 } $1 == "Cipher" { c = $2 }
          END { print v " " c }' "$out")
      fi
      record "$proto" "$r" "$t" rps "$rps"
      record "$proto" "$r" "$t" cpu_us "$cpu"
      log "round $r $proto $t: $(printf '%.0f' "$rps") req/s, $(printf '%.2f' "$cpu") µs CPU/req ($((after - before)) ticks)"
    done
    check_alive
  done
done

if [ -z "${SKIPPED[veer]:-}" ]; then
  record mem 1 veer rss_after_kb "$(rss_kb veer)"
fi
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- report
TS=$(date -u +%Y%m%dT%H%M%SZ)
commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "?")
if [ -n "$(git -C "$ROOT" status --porcelain 2>/dev/null | head -n 1)" ]; then commit="$commit (dirty tree)"; fi
cpu_model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
machine="$(nproc) CPUs ($cpu_model), $(uname -sr), loopback"
tools="haproxy $(haproxy -v 2>/dev/null | awk 'NR == 1 { print $3 }' || true)"
tools="$tools, $(nginx -v 2>&1 | sed -n 's|nginx version: ||p' || true)"
tools="$tools, $(h2load --version 2>/dev/null | sed -n 1p || true)"
[ "$WRK_DURATION" != 0 ] && tools="$tools, $(wrk -v 2>&1 | awk 'NR == 1 { print $1 " " $2 }' || true)"
pin_desc="none (scheduler's choice)"
[ "$PIN" = 1 ] && pin_desc="backend + load generator on CPU 0, proxy on CPU 1"

META=$WORK/meta.json
: >"$WORK/skipped.tsv"
for k in "${!SKIPPED[@]}"; do printf '%s\t%s\n' "$k" "${SKIPPED[$k]}" >>"$WORK/skipped.tsv"; done
: >"$WORK/notes.txt"
for n in "${NOTES[@]}"; do printf '%s\n' "$n" >>"$WORK/notes.txt"; done
: >"$WORK/pskip.tsv"
for k in "${!PSKIP[@]}"; do printf '%s\t%s\t%s\n' "${k% *}" "${k#* }" "${PSKIP[$k]}" >>"$WORK/pskip.tsv"; done
: >"$WORK/tlsneg.tsv"
for k in "${!TLSNEG[@]}"; do printf '%s\t%s\t%s\n' "${k% *}" "${k#* }" "${TLSNEG[$k]}" >>"$WORK/tlsneg.tsv"; done
M_TS=$TS M_COMMIT=$commit M_VEER_VERSION=$VEER_VERSION M_MACHINE=$machine M_TOOLS=$tools \
M_PATH=$REQ_PATH M_BODY_BYTES=$BODY_BYTES M_REQUESTS=$REQUESTS M_CONNS=$CONNS \
M_WRK_DURATION=$WRK_DURATION M_LAT_CONNS=$LAT_CONNS M_LAT_DURATION=$LAT_DURATION \
M_LAT_WARMUP=$LAT_WARMUP M_RATE=$RATE M_RPS_PER_CONN=$RPS_PER_CONN M_RATE_NOTE=$RATE_NOTE \
M_ROUNDS=$ROUNDS M_PIN=$pin_desc M_PROTOCOLS="${PROTOCOLS[*]}" M_STREAMS=$STREAMS \
M_LOAD_START=$LOAD_START M_LOAD_END=$LOAD_END M_VEER_FEATURES=$VEER_FEATURES \
python3 - "$META" "$WORK/skipped.tsv" "$WORK/notes.txt" "$WORK/pskip.tsv" "$WORK/tlsneg.tsv" <<'EOF'
import json, os, sys
e = lambda k: os.environ["M_" + k]
skipped = dict(l.rstrip("\n").split("\t", 1) for l in open(sys.argv[2]) if "\t" in l)
notes = [l.rstrip("\n") for l in open(sys.argv[3]) if l.strip()]
pskip = {}
for l in open(sys.argv[4]):
    parts = l.rstrip("\n").split("\t", 2)
    if len(parts) == 3:
        pskip.setdefault(parts[0], {})[parts[1]] = parts[2]
tlsneg = {}
for l in open(sys.argv[5]):
    parts = l.rstrip("\n").split("\t", 2)
    if len(parts) == 3:
        tlsneg.setdefault(parts[0], {})[parts[1]] = parts[2]
meta = {
    "timestamp": e("TS"), "commit": e("COMMIT"), "veer_version": e("VEER_VERSION"),
    "machine": e("MACHINE"), "tools": e("TOOLS"), "path": e("PATH"),
    "body_bytes": int(e("BODY_BYTES")), "requests": int(e("REQUESTS")), "conns": int(e("CONNS")),
    "wrk_duration": e("WRK_DURATION"), "lat_conns": int(e("LAT_CONNS")),
    "lat_duration": e("LAT_DURATION"), "lat_warmup": e("LAT_WARMUP"), "rate": float(e("RATE")),
    "rps_per_conn": float(e("RPS_PER_CONN")), "rate_note": e("RATE_NOTE"),
    "rounds": int(e("ROUNDS")), "pin": e("PIN"), "skipped": skipped, "notes": notes,
    "protocols": e("PROTOCOLS").split(), "streams": int(e("STREAMS")),
    "load_start": e("LOAD_START"), "load_end": e("LOAD_END"), "protocol_skipped": pskip,
    "tls_negotiated": tlsneg, "veer_features": e("VEER_FEATURES"),
}
json.dump(meta, open(sys.argv[1], "w"), indent=1)
EOF

mkdir -p "$RESULTS_DIR"
# <TS>-h1.md keeps the HTTP/1.1 report as it always was; <TS>.md has every
# protocol's rows and the ratio table per protocol. Both read the same raw TSV.
if want h1; then
  $REPORT table "$RAW" "$META" >"$RESULTS_DIR/$TS-h1.md.tmp"
  mv "$RESULTS_DIR/$TS-h1.md.tmp" "$RESULTS_DIR/$TS-h1.md"
  cp "$RESULTS_DIR/$TS-h1.md" "$RESULTS_DIR/latest-h1.md"
  cp "$RAW" "$RESULTS_DIR/$TS-h1.raw.tsv"
fi
$REPORT protocols "$RAW" "$META" >"$RESULTS_DIR/$TS.md.tmp"
mv "$RESULTS_DIR/$TS.md.tmp" "$RESULTS_DIR/$TS.md"
cp "$RESULTS_DIR/$TS.md" "$RESULTS_DIR/latest.md"
cp "$RAW" "$RESULTS_DIR/$TS.raw.tsv"
cat "$RESULTS_DIR/$TS.md"
echo
if want h1; then
  log "written to $RESULTS_DIR/$TS.md (all protocols; latest.md) and $TS-h1.md (latest-h1.md); raw values in $TS.raw.tsv"
else
  log "written to $RESULTS_DIR/$TS.md (and latest.md; raw values in $TS.raw.tsv)"
fi
