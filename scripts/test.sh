#!/usr/bin/env bash
# Installs everything the tests need (apt + pip), then runs the whole suite:
# unit tests on real Tor documents and integration tests against a private
# Tor network and other real servers, all on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install.sh --test
exec .venv/bin/python -m pytest "$@"
