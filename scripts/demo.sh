#!/usr/bin/env bash
# Quick start: builds flora-cluster and the hello example, then runs a cluster of hello
# workers in the foreground on 127.0.0.1 (Ctrl-C stops it cleanly).
#   WORKERS=4 PORT=1337 scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
WORKERS=${WORKERS:-3}
export HOST=${HOST:-127.0.0.1} PORT=${PORT:-1337}
cargo build --quiet --bin flora-cluster --example hello
cat <<MSG
flora-cluster demo: $WORKERS hello workers
  open   http://$HOST:$PORT/
  status http://127.0.0.1:9337/server-status   (metrics: /metrics, terminal: target/debug/flora-cluster status --name demo)
  stop   Ctrl-C (or kill -TERM <master pid>)
MSG
exec target/debug/flora-cluster run --name demo --workers "$WORKERS" -- target/debug/examples/hello
