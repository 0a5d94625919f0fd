# scripts/procs.sh — sourced by scripts/demo.sh and bench/run.sh.
# The caller keeps its background processes (each started with setsid, so
# each leads its own process group) in the associative array PID[name].

# stop_all: SIGTERM every group, give each up to 3 s, then SIGKILL and reap.
stop_all() {
  local name p
  for name in "${!PID[@]}"; do
    p=${PID[$name]}
    kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null || true
  done
  for name in "${!PID[@]}"; do
    p=${PID[$name]}
    for _ in $(seq 1 30); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$p" 2>/dev/null || kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
}
