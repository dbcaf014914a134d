"""Renders docs/checks.md from the registry: ``python -m agent.checks.docs > docs/checks.md``."""

from __future__ import annotations

import re
from pathlib import Path

from agent.checks import REGISTRY
import agent.checks.all  # noqa: F401

#: DocTor checks deliberately or not yet reproduced, and why.
NOT_BUILT = {
    "SHARED_RANDOM_COMMITMENT_MISMATCH": "not built yet (needs the commit-phase comparison of shared-rand-commit lines across votes)",
    "SHARED_RANDOM_NO_REVEAL / MULTIPLE_REVEAL / REVEAL_MISSING / REVEAL_DUPLICATED / REVEAL_MISMATCH":
        "not built yet (reveal-phase comparison; DocTor's own versions are no-ops)",
    "UNABLE_TO_REACH_ORPORT": "not built yet (needs a TCP probe of each authority's ORPort in fetch.py)",
    "OLD_DIZUM_UNAVAILABLE": "not ported: a one-off for a retired address (trac #31406)",
}
TESTS = Path(__file__).parents[2] / "tests" / "unit" / "test_checks.py"


def _tests_by_check() -> dict[str, str]:
    found: dict[str, str] = {}
    if not TESTS.exists():
        return found
    current = None
    for line in TESTS.read_text().splitlines():
        match = re.match(r"def (test_\w+)", line)
        if match:
            current = match.group(1)
        for check_id in re.findall(r'"(Tor\w+)"', line):
            found.setdefault(check_id, current)
    return found


def render() -> str:
    tests = _tests_by_check()
    lines = ["# Consensus-health checks", "",
             "Generated from the check registry (`agent/checks/`) by `python -m agent.checks.docs`; do not edit.",
             "", "Severity: critical = act now; warning = act soon; info = worth knowing. Thresholds are in",
             "`checks.thresholds` (DocTor's values by default); silences and maintenance windows in `checks.silences`.",
             "Each active finding is counted in `tor_health_active{check,severity}`.", "",
             "| check | severity | DocTor equivalent | what it means | test that fires it |", "|---|---|---|---|---|"]
    for check in REGISTRY:
        lines.append(f"| `{check.id}` | {check.severity} | {check.doctor} | {check.summary} | "
                     f"`tests/unit/test_checks.py::{tests.get(check.id, 'NO TEST FIRES THIS')}` |")
    lines += ["", "## DocTor checks not reproduced", "", "| DocTor check | status |", "|---|---|"]
    lines += [f"| {name} | {why} |" for name, why in NOT_BUILT.items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
