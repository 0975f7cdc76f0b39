#!/usr/bin/env bash
# The project's whole test suite: installs what the tests need (Debian packages, as root),
# then formatting, lints, unit, integration, doc and benchmark-smoke tests.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests use, as "command:package"; installed only when missing.
TOOLS=(
  "promtool:prometheus"                                    # exposition lint, real Prometheus server
  "prometheus-apache-exporter:prometheus-apache-exporter"  # reads /server-status?auto
  "chromium:chromium"                                      # renders the status page headless
  "node:nodejs"                                            # dashboards/schema/validate.mjs
  "npm:npm"                                                # dashboards/schema/generate.sh
  "nginx:nginx"                                            # reverse proxy on a unix socket (tests/unix_nginx.rs)
  "wrk:wrk"                                                # load through it
  "curl:curl"                                              # HTTPS client of tests/tls*.rs
  "tmux:tmux"                                              # drives `flora-cluster top` (tests/top.rs)
)
need_pkgs=()
for tool_pkg in "${TOOLS[@]}"; do
  tool=${tool_pkg%%:*} pkg=${tool_pkg#*:}
  command -v "$tool" >/dev/null 2>&1 || need_pkgs+=("$pkg")
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    # Never let a package start a service on a public port.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
      chmod +x /usr/sbin/policy-rc.d
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}"
  else
    echo "warning: missing ${need_pkgs[*]} (run as root to install)" >&2
  fi
fi

# The strict OpenMetrics reference parser (Python prometheus_client), in a private venv.
PYVENV=target/test-venv
# Also the official OpenTelemetry protobuf messages, for the OTLP receiver of tests/otlp.rs.
if [ ! -x "$PYVENV/bin/python" ] || ! "$PYVENV/bin/python" -c 'import prometheus_client, opentelemetry.proto.collector.metrics.v1.metrics_service_pb2' 2>/dev/null; then
  python3 -m venv "$PYVENV"
  "$PYVENV/bin/pip" install --quiet --disable-pip-version-check prometheus_client 'opentelemetry-proto==1.45.2'
fi
export FLORA_TEST_PYTHON="$PWD/$PYVENV/bin/python"

# Grafana's dashboard types as a JSON schema for tests/dashboards.rs (npm packages go into
# target/grafana-schema/, never into the repo; does nothing when already generated).
dashboards/schema/generate.sh

cargo fmt --all -- --check
# Every feature on (`tls`: tests/tls*.rs); the default build must still compile on its own.
cargo check --quiet --lib --bins
cargo clippy --all-targets --all-features --quiet -- -D warnings
cargo test --all-targets --all-features --no-fail-fast
cargo test --doc --all-features
