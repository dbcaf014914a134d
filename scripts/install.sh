#!/usr/bin/env bash
# Installs what the agent needs on Debian 12: the tor package (for the private
# test network and its tools) and a virtualenv in .venv with the pinned Python
# dependencies. `--test` adds what the test suite needs.
# Safe to run again; run as root or with sudo available.
set -euo pipefail
cd "$(dirname "$0")/.."

with_tests=0
[ "${1:-}" = "--test" ] && with_tests=1

# victoria-metrics: the embedded store the agent starts itself when no store.url is set.
packages=(tor tor-geoipdb victoria-metrics python3-venv python3-pip ca-certificates)
# The tests also verify the systemd unit, check the alert rules with promtool
# (Debian's prometheus package) and vmalert, and run the InfluxQL dashboard
# targets against Debian's InfluxDB 1.x.
[ "$with_tests" -eq 1 ] && packages+=(systemd prometheus influxdb)
# The subscription page is driven in a real headless browser (Playwright with Debian's chromium, no download).
[ "$with_tests" -eq 1 ] && packages+=(chromium)

# tsc type-checks the dashboards against Grafana's schema (npm packages in grafana/schema-check).
if [ "$with_tests" -eq 1 ] && ! command -v npm >/dev/null 2>&1; then packages+=(nodejs npm); fi

sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
  # Debian starts the system tor service on install; it would reach the live
  # network. Forbid service starts during the install, then restore.
  created_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo_cmd[@]}" tee /usr/sbin/policy-rc.d >/dev/null
    "${sudo_cmd[@]}" chmod +x /usr/sbin/policy-rc.d
    created_policy=1
  fi
  "${sudo_cmd[@]}" apt-get update -q
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
  [ "$created_policy" -eq 1 ] && "${sudo_cmd[@]}" rm -f /usr/sbin/policy-rc.d
fi
# Belt and braces: no system tor may run beside the private test network.
for service in tor victoria-metrics prometheus influxdb; do
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$service" 2>/dev/null; then
    "${sudo_cmd[@]}" systemctl disable --now "$service"
  fi
done

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if [ "$with_tests" -eq 1 ]; then
  .venv/bin/python -m pip install -q -e '.[test]'
else
  .venv/bin/python -m pip install -q -e .
fi
if [ "$with_tests" -eq 1 ]; then
  # The alert tests start a real Matrix homeserver: Synapse, in a virtualenv of
  # its own so that its many pins never meet the agent's.
  synapse_version=1.163.2
  if [ ! -x .venv-synapse/bin/python ] || ! .venv-synapse/bin/python -m pip show matrix-synapse 2>/dev/null \
      | grep -q "^Version: $synapse_version$"; then
    [ -x .venv-synapse/bin/python ] || python3 -m venv .venv-synapse
    .venv-synapse/bin/python -m pip install -q --upgrade pip
    .venv-synapse/bin/python -m pip install -q "matrix-synapse==$synapse_version"
  fi
fi
if [ "$with_tests" -eq 1 ]; then
  (cd grafana/schema-check && npm ci --no-audit --no-fund --loglevel=error)
fi
echo "installed: $(.venv/bin/allium-agent --version), $(tor --version | head -n 1)"
