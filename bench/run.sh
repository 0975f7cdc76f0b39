#!/usr/bin/env bash
# Benchmarks that need real processes and a real load generator (wrk, from Debian's packages).
# Everything runs on 127.0.0.1, for a fixed time, and stops by itself.
#
#   bench/run.sh reload [SECONDS]   # 2 workers under wrk: no reloads vs a reload every second
#
# Prints a table; compare the rows of one run (the machine is noisy across runs).
set -euo pipefail
cd "$(dirname "$0")/.."

need() {
  command -v "$1" >/dev/null 2>&1 && return
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >/dev/null
  else
    echo "missing $1 (apt-get install $2)" >&2; exit 1
  fi
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

MASTER_PID=""
WORK=$(mktemp -d)
cleanup() {
  if [ -n "$MASTER_PID" ] && kill -0 "$MASTER_PID" 2>/dev/null; then
    kill -TERM "$MASTER_PID" 2>/dev/null || true
    wait "$MASTER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

start_cluster() { # workers port
  HOST=127.0.0.1 PORT=$2 RUST_LOG=warn target/release/flora-cluster run --name bench --runtime-dir "$WORK/rt" \
    --workers "$1" --shutdown-timeout 10 -- target/release/flora-demo >"$WORK/master.log" 2>&1 &
  MASTER_PID=$!
  for _ in $(seq 1 200); do
    curl -fs "http://127.0.0.1:$2/" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "cluster did not start:" >&2; cat "$WORK/master.log" >&2; exit 1
}

stop_cluster() {
  kill -TERM "$MASTER_PID"; wait "$MASTER_PID" || true; MASTER_PID=""
}

# wrk_row LABEL OUTFILE: one table row from wrk's output.
wrk_row() {
  local f=$2
  local rps p99 errs non2xx reqs
  rps=$(awk '/^Requests\/sec:/ {print $2}' "$f")
  reqs=$(awk '/requests in/ {print $1}' "$f")
  p99=$(awk '$1=="99%" {print $2}' "$f")
  errs=$(awk '/Socket errors:/ {gsub(",",""); print $4+$6+$8+$10}' "$f")
  non2xx=$(awk '/Non-2xx/ {print $NF}' "$f")
  printf '%-28s %12s %10s %10s %8s %8s\n' "$1" "$rps" "$reqs" "$p99" "${errs:-0}" "${non2xx:-0}"
}

bench_reload() {
  local secs=${1:-10}
  need wrk wrk; need curl curl
  cargo build --release --quiet --bin flora-cluster --bin flora-demo
  local port; port=$(free_port)
  start_cluster 2 "$port"
  local url="http://127.0.0.1:$port/"
  wrk -t2 -c50 -d1s "$url" >/dev/null # warm-up
  wrk -t2 -c50 -d"${secs}s" --latency "$url" >"$WORK/plain.txt"
  wrk -t2 -c50 -d"${secs}s" --latency "$url" >"$WORK/reload.txt" &
  local wrk_pid=$! ok=0 rolled=0
  while kill -0 "$wrk_pid" 2>/dev/null; do
    sleep 1
    kill -0 "$wrk_pid" 2>/dev/null || break
    if target/release/flora-cluster reload --name bench --runtime-dir "$WORK/rt" --timeout 30 >/dev/null; then
      ok=$((ok + 1))
    else
      rolled=$((rolled + 1))
    fi
  done
  wait "$wrk_pid"
  stop_cluster
  echo "reload under load: 2 workers, wrk -t2 -c50 -d${secs}s, $(nproc) cores"
  printf '%-28s %12s %10s %10s %8s %8s\n' run "req/s" requests p99 errors non-2xx
  wrk_row "no reload" "$WORK/plain.txt"
  wrk_row "reload every 1 s ($ok ok, $rolled rb)" "$WORK/reload.txt"
}

case "${1:-}" in
  reload) shift; bench_reload "$@" ;;
  *) echo "usage: bench/run.sh reload [SECONDS]" >&2; exit 2 ;;
esac
