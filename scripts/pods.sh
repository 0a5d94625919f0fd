# scripts/pods.sh — sourced by scripts/demo.sh and bench/canary.sh: starts mock
# pods and veer on free loopback ports, each in its own session, logs in $LOGS.
# The caller defines say/die and sets VEER and MOCKPOD, then calls
# use_logs DIR_OR_EMPTY PREFIX before starting anything.
# shellcheck shell=bash disable=SC2004,SC2034

# shellcheck source=scripts/procs.sh
. "$(dirname "${BASH_SOURCE[0]}")/procs.sh"

declare -A PID=()

use_logs() { # use_logs DIR PREFIX: checks the binaries; LOGS=DIR, or a new /tmp/PREFIX.XXXXXX when DIR is empty
  [ -x "$VEER" ] || die "no veer binary at $VEER (make build)"
  [ -x "$MOCKPOD" ] || die "no veer-mockpod binary at $MOCKPOD (make build)"
  LOGS=${1:-$(mktemp -d "${TMPDIR:-/tmp}/$2.XXXXXX")}
  mkdir -p "$LOGS"
}

declare -A POD_PORT=()
STDBUF=""
command -v stdbuf >/dev/null 2>&1 && STDBUF="stdbuf -oL -eL"

start() { # start NAME CMD... (own session, output to LOGS/NAME.log)
  local name=$1; shift
  setsid "$@" >"$LOGS/$name.log" 2>&1 </dev/null &
  PID[$name]=$!
}
alive() { kill -0 "${PID[$1]}" 2>/dev/null; }
show_log() { echo "---- $LOGS/$1.log (last lines)" >&2; tail -n 20 "$LOGS/$1.log" >&2 || true; }
http_code() { curl -s -o /dev/null -m 2 -w '%{http_code}' "$@" 2>/dev/null || true; }

start_pods() { # start_pods NAME...: fills POD_PORT[NAME] once each answers GET /health
  local pod port
  for pod in "$@"; do
    # shellcheck disable=SC2086
    start "$pod" $STDBUF "$MOCKPOD" --listen 127.0.0.1:0 --name "$pod" --ready-file "$LOGS/$pod.ready"
  done
  for pod in "$@"; do
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
  done
}

free_ports() { # free_ports: prints two free loopback ports (listener, admin)
  python3 -c '
import socket
a, b = socket.socket(), socket.socket()
a.bind(("127.0.0.1", 0)); b.bind(("127.0.0.1", 0))
print(a.getsockname()[1], b.getsockname()[1])'
}

start_veer() { # start_veer CONFIG LISTEN_PORT ADMIN_PORT: checks the config, waits for /readyz and a 200 on the route
  local config=$1 listen=$2 admin=$3 code="" ready=0
  if ! "$VEER" check -c "$config" >"$LOGS/veer-check.log" 2>&1; then
    cat "$LOGS/veer-check.log" >&2
    die "veer check rejected $config"
  fi
  start veer "$VEER" run -c "$config"
  for _ in $(seq 1 100); do
    alive veer || { show_log veer; die "veer exited during start-up"; }
    [ "$(http_code "http://127.0.0.1:$admin/readyz")" = 200 ] && { ready=1; break; }
    sleep 0.1
  done
  [ "$ready" = 1 ] || { show_log veer; die "veer: admin /readyz did not answer 200 within 10s"; }
  for _ in $(seq 1 50); do
    code=$(http_code -X POST -H 'content-type: application/json' -d '{"text":"hello","model":"embed-small-v1"}' \
      "http://127.0.0.1:$listen/api/v1/embed")
    [ "$code" = 200 ] && break
    sleep 0.1
  done
  [ "$code" = 200 ] || { show_log veer; die "veer is ready but POST /api/v1/embed answered '$code'"; }
}
