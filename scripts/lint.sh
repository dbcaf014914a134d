#!/usr/bin/env bash
# Static checks, configured in pyproject.toml: ruff's lint rules over the code,
# tests and benchmarks, and mypy (strict for agent/model and agent/pipeline).
# No format check: the code is not ruff-formatted. Runs every check, then
# exits non-zero if any failed. Needs .venv with the `test` extra
# (./scripts/install.sh --test).
set -uo pipefail
cd "$(dirname "$0")/.."

status=0
echo "== ruff check"
.venv/bin/ruff check agent tests benchmarks || status=1
echo "== mypy"
.venv/bin/mypy || status=1
exit "$status"
