"""Renders docs/checks.md from the registry: ``python -m agent.checks.docs > docs/checks.md``."""

from __future__ import annotations

import re
from pathlib import Path

from agent.checks.catalog import CHECKS

#: DocTor checks deliberately or not yet reproduced, and why.
NOT_BUILT = {
    "OLD_DIZUM_UNAVAILABLE": "not ported: a one-off for a retired address (trac #31406)",
}
TESTS = Path(__file__).parents[2] / "tests" / "unit"


def _tests_by_check() -> dict[str, str]:
    """Check ID -> "file::test" of the first test in tests/unit/test_checks*.py that names it."""
    found: dict[str, str] = {}
    for path in sorted(TESTS.glob("test_checks*.py")):
        current = None
        for line in path.read_text().splitlines():
            match = re.match(r"def (test_\w+)", line)
            if match:
                current = f"tests/unit/{path.name}::{match.group(1)}"
            for check_id in re.findall(r'"(Tor\w+)"', line):
                if current:
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
    # Grouped by module, whatever order the modules were imported in.
    for check in sorted(CHECKS, key=lambda c: (c.run.__module__, c.id)):
        lines.append(f"| `{check.id}` | {check.severity} | {check.doctor} | {check.summary} | "
                     f"`{tests.get(check.id, 'NO TEST FIRES THIS')}` |")
    lines += ["", "## DocTor checks not reproduced", "", "| DocTor check | status |", "|---|---|"]
    lines += [f"| {name} | {why} |" for name, why in NOT_BUILT.items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
