#!/usr/bin/env bash
# Load benchmarks with real processes and a real load generator, side by side, on 127.0.0.1.
#   bench/run.sh [all|overhead|nginx|node|reload|scrape|respawn|rss|instructions] [--secs N] [--runs N] [--pin]
# Installs wrk, nginx, Node.js and valgrind from Debian's packages when missing (as root), builds in
# release mode, and prints Markdown tables (see BENCHMARKS.md). Everything stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v nginx >/dev/null 2>&1 || need+=(nginx)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v valgrind >/dev/null 2>&1 || need+=(valgrind)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    # Never let a package start a service on a public port.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
      chmod +x /usr/sbin/policy-rc.d
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "missing ${need[*]}: apt-get install ${need[*]}" >&2
    exit 1
  fi
fi
cargo build --release --quiet --bin flora-cluster --bin flora-demo --example hello
exec python3 bench/bench.py "$@"
