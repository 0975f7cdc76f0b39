#!/usr/bin/env bash
# Load benchmarks with real processes and a real load generator, side by side, on 127.0.0.1.
#   bench/run.sh [all|overhead|nginx|node|reload|scrape|respawn|rss|instructions|sampler] [--secs N] [--runs N] [--pin]
#                [--before-ref GIT_REF]
# --before-ref builds examples/hello from GIT_REF too and measures it beside the current one
# (instructions, nginx, node): before and after in one run.
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
args=()
before_ref=""
while [ $# -gt 0 ]; do
  case "$1" in
    --before-ref) before_ref="$2"; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
if [ -n "$before_ref" ]; then
  src=$(mktemp -d /tmp/flora-bench-before-XXXXXX)
  git archive "$before_ref" | tar -x -C "$src"
  out="${CARGO_TARGET_DIR:-$PWD/target}"
  # Its own target dir: built into the shared one, the earlier hello would overwrite the
  # current one's binary, which cargo then thinks fresh and does not link again.
  (cd "$src" && CARGO_TARGET_DIR="$out/bench-before-target" cargo build --release --quiet --example hello)
  mkdir -p "$out/bench-before"
  before="$out/bench-before/hello-$(git rev-parse --short "$before_ref")"
  cp "$out/bench-before-target/release/examples/hello" "$before"
  rm -rf "$src"
  args+=(--before "$before")
fi
cargo build --release --quiet --bin flora-cluster --bin flora-demo --example hello
exec python3 bench/bench.py "${args[@]}"
